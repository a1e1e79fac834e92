package daemon_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/pkg/daemon"
	"github.com/berth-containers/berth/pkg/image"
)

func rootfs(t *testing.T) string {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\nweb:x:1000:1000::/:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "etc/group"), []byte("root:x:0:\nweb:x:1000:\n"), 0o644)
	return dir
}

func hasMount(s *specs.Spec, dst string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dst {
			return &s.Mounts[i]
		}
	}
	return nil
}

func TestContainerSpecDefaults(t *testing.T) {
	rc := image.RunConfig{Args: []string{"/app", "serve"}, Env: []string{"A=1"}, Cwd: "/srv", User: "web"}
	s, err := daemon.ContainerSpec(rootfs(t), rc, &container.Config{Hostname: "box", Tty: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Process.Args[0] != "/app" || s.Process.Cwd != "/srv" || s.Process.User.UID != 1000 || !s.Process.Terminal || s.Hostname != "box" {
		t.Errorf("process %+v hostname %q", s.Process, s.Hostname)
	}
	if m := hasMount(s, "/dev/shm"); m == nil || !slices.Contains(m.Options, "size=67108864") {
		t.Errorf("/dev/shm: %+v", m)
	}
	if s.Linux.Seccomp == nil || len(s.Process.Capabilities.Bounding) != 14 {
		t.Errorf("seccomp %v, %d capabilities: want Docker's defaults", s.Linux.Seccomp != nil, len(s.Process.Capabilities.Bounding))
	}
}

func TestContainerSpecHostConfig(t *testing.T) {
	bind := t.TempDir()
	pids := int64(50)
	hc := &container.HostConfig{
		Resources: container.Resources{Memory: 64 << 20, NanoCPUs: 1_500_000_000, CpusetCpus: "0", PidsLimit: &pids,
			Devices: []container.DeviceMapping{{PathOnHost: "/dev/null", PathInContainer: "/dev/mynull"}},
			Ulimits: []*container.Ulimit{{Name: "nofile", Soft: 100, Hard: 200}}},
		CapAdd: []string{"net_admin", "CAP_SYS_ADMIN"}, CapDrop: []string{"MKNOD"},
		Binds: []string{bind + ":/data:ro"}, ReadonlyRootfs: true, ShmSize: 1 << 20,
		NetworkMode: "host", OomScoreAdj: 100, Tmpfs: map[string]string{"/run": "size=1m"},
	}
	s, err := daemon.ContainerSpec(rootfs(t), image.RunConfig{Args: []string{"sh"}, Cwd: "/"}, nil, hc)
	if err != nil {
		t.Fatal(err)
	}
	r := s.Linux.Resources
	if *r.Memory.Limit != 64<<20 || *r.Memory.Swap != 128<<20 || *r.CPU.Quota != 150000 || *r.CPU.Period != 100000 || r.CPU.Cpus != "0" || *r.Pids.Limit != 50 {
		t.Errorf("resources %+v %+v %+v", r.Memory, r.CPU, r.Pids)
	}
	caps := s.Process.Capabilities.Bounding
	if !slices.Contains(caps, "CAP_NET_ADMIN") || !slices.Contains(caps, "CAP_SYS_ADMIN") || slices.Contains(caps, "CAP_MKNOD") {
		t.Errorf("capabilities %v", caps)
	}
	if m := hasMount(s, "/data"); m == nil || m.Source != bind || !slices.Contains(m.Options, "ro") {
		t.Errorf("bind: %+v", m)
	}
	if m := hasMount(s, "/run"); m == nil || !slices.Contains(m.Options, "size=1m") {
		t.Errorf("tmpfs: %+v", m)
	}
	if !s.Root.Readonly || *s.Process.OOMScoreAdj != 100 {
		t.Errorf("readonly %v oom %v", s.Root.Readonly, s.Process.OOMScoreAdj)
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			t.Error("--network host kept a network namespace")
		}
	}
	if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/mynull" || s.Linux.Devices[0].Major != 1 {
		t.Errorf("devices %+v", s.Linux.Devices)
	}
	found := false
	for _, rl := range s.Process.Rlimits {
		if rl.Type == "RLIMIT_NOFILE" && rl.Soft == 100 && rl.Hard == 200 {
			found = true
		}
	}
	if !found {
		t.Errorf("rlimits %+v", s.Process.Rlimits)
	}
	// CAP_SYS_ADMIN opens mount(2) in Docker's seccomp profile.
	if !seccompAllows(s, "mount") {
		t.Error("seccomp profile not recomputed for the added capabilities")
	}
	def, _ := daemon.ContainerSpec(rootfs(t), image.RunConfig{Args: []string{"sh"}}, nil, nil)
	if seccompAllows(def, "mount") {
		t.Error("default profile allows mount")
	}
}

func seccompAllows(s *specs.Spec, name string) bool {
	for _, sc := range s.Linux.Seccomp.Syscalls {
		if sc.Action == specs.ActAllow && slices.Contains(sc.Names, name) {
			return true
		}
	}
	return false
}

func TestContainerSpecAllCapabilities(t *testing.T) {
	none, err := daemon.ContainerSpec(rootfs(t), image.RunConfig{Args: []string{"sh"}}, nil, &container.HostConfig{CapDrop: []string{"all"}})
	if err != nil || len(none.Process.Capabilities.Bounding) != 0 {
		t.Errorf("--cap-drop all: %v %v", none.Process.Capabilities.Bounding, err)
	}
	all, err := daemon.ContainerSpec(rootfs(t), image.RunConfig{Args: []string{"sh"}}, nil, &container.HostConfig{CapAdd: []string{"ALL"}, CapDrop: []string{"NET_RAW"}})
	if err != nil || len(all.Process.Capabilities.Bounding) < 37 || slices.Contains(all.Process.Capabilities.Bounding, "CAP_NET_RAW") {
		t.Errorf("--cap-add all --cap-drop net_raw: %d caps %v", len(all.Process.Capabilities.Bounding), err)
	}
}

func TestContainerSpecPrivileged(t *testing.T) {
	s, err := daemon.ContainerSpec(rootfs(t), image.RunConfig{Args: []string{"sh"}}, nil, &container.HostConfig{Privileged: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Linux.Seccomp != nil || len(s.Linux.MaskedPaths) != 0 || len(s.Process.Capabilities.Bounding) < 38 || !s.Linux.Resources.Devices[0].Allow {
		t.Errorf("privileged: seccomp %v masked %v caps %d devices %+v", s.Linux.Seccomp != nil, s.Linux.MaskedPaths, len(s.Process.Capabilities.Bounding), s.Linux.Resources.Devices)
	}
}

// TestBindMakesMissingSource: -v with a missing host path makes it, a
// directory, as docker does.
func TestBindMakesMissingSource(t *testing.T) {
	src := filepath.Join(t.TempDir(), "made", "here")
	if _, err := daemon.ContainerSpec(rootfs(t), image.RunConfig{Args: []string{"sh"}}, nil, &container.HostConfig{Binds: []string{src + ":/data"}}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		t.Errorf("bind source not made: %v", err)
	}
}

func TestContainerSpecBadInput(t *testing.T) {
	for name, hc := range map[string]*container.HostConfig{
		"relative bind":     {Binds: []string{"data:/data"}},
		"bind under a file": {Binds: []string{"/etc/passwd/x:/data"}},
		"bad bind option":   {Binds: []string{"/tmp:/data:xyz"}},
		"unknown cap":       {CapAdd: []string{"NOT_A_CAP"}},
		"swap without mem":  {Resources: container.Resources{MemorySwap: 1 << 20}},
		"unknown ulimit":    {Resources: container.Resources{Ulimits: []*container.Ulimit{{Name: "bogus"}}}},
		"not a device":      {Resources: container.Resources{Devices: []container.DeviceMapping{{PathOnHost: "/etc/passwd"}}}},
		"cpus and quota":    {Resources: container.Resources{NanoCPUs: 1e9, CPUQuota: 5000}},
	} {
		_, err := daemon.ContainerSpec(rootfs(t), image.RunConfig{Args: []string{"sh"}}, nil, hc)
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want an invalid-argument error", name, err)
		}
	}
	if _, err := daemon.ContainerSpec(rootfs(t), image.RunConfig{Args: []string{"sh"}, User: "nobody-here"}, nil, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown user: %v", err)
	}
}

// TestContainerSpecEnv: as Docker, HOME comes from the user's passwd
// entry ("/" if absent) and HOSTNAME is the host name, unless set.
func TestContainerSpecEnv(t *testing.T) {
	for _, tc := range []struct {
		user string
		env  []string
		want []string
	}{
		{"", nil, []string{"HOME=/root", "HOSTNAME=box"}},
		{"web", nil, []string{"HOME=/", "HOSTNAME=box"}},
		{"4242", nil, []string{"HOME=/", "HOSTNAME=box"}},
		{"", []string{"HOME=/h", "HOSTNAME=mine"}, []string{"HOME=/h", "HOSTNAME=mine"}},
	} {
		rc := image.RunConfig{Args: []string{"sh"}, User: tc.user, Env: tc.env}
		s, err := daemon.ContainerSpec(rootfs(t), rc, &container.Config{Hostname: "box"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !slices.Contains(s.Process.Env, w) {
				t.Errorf("user %q env %v: %v lacks %s", tc.user, tc.env, s.Process.Env, w)
			}
		}
	}
}
