package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/cgroups"
	"github.com/berth-containers/berth/pkg/runtime"
)

func TestIsolation(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"pid 1 is the process", []string{"/probe", "pid"}, "1"},
		{"hostname from the spec", []string{"/probe", "hostname"}, "berth"},
		{"only container processes in /proc", []string{"/probe", "procs"}, "[1]"},
		{"capabilities as in the spec", []string{"/probe", "status", "CapEff"}, "00000000a80425fb"},
		{"docker seccomp profile denies keyctl", []string{"/probe", "keyctl"}, "EPERM"},
		{"cwd inside the container", []string{"/probe", "cwd"}, "/ <nil>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.args...)
			if got := f.runOK(t); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHostMountsInvisible(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "/probe", "mounts")
	allowed := map[string]bool{"/": true}
	for _, m := range f.spec.Mounts {
		allowed[m.Destination] = true
	}
	for _, p := range append(f.spec.Linux.MaskedPaths, f.spec.Linux.ReadonlyPaths...) {
		allowed[p] = true
	}
	for _, mp := range strings.Fields(f.runOK(t)) {
		if !allowed[mp] && !strings.HasPrefix(mp, "/sys/fs/cgroup/") {
			t.Errorf("unexpected mount %s in the container", mp)
		}
	}
}

// TestJoinedNetworkNamespace: a container joining a network namespace by
// path is in it, and its /sys shows that namespace's links, not the
// host's.
func TestJoinedNetworkNamespace(t *testing.T) {
	t.Parallel()
	ip := testutil.Require(t, "ip")
	name := fmt.Sprintf("berth-rt-%d", os.Getpid())
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", name).Run() })
	if out, err := exec.Command(ip, "-n", name, "link", "add", "joined0", "type", "veth", "peer", "name", "joined1").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v %s", err, out)
	}
	f := newFixture(t, "sh", "-c", "ls /sys/class/net | tr '\\n' ' '")
	for i, ns := range f.spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			f.spec.Linux.Namespaces[i].Path = "/run/netns/" + name
		}
	}
	if out := strings.Join(strings.Fields(f.runOK(t)), " "); out != "joined0 joined1 lo" {
		t.Errorf("/sys/class/net in a joined namespace: %q", out)
	}
}

func TestProcessSettings(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sh", "-c", `echo "$FOO"; pwd; /probe id; /probe status CapEff; cat /proc/self/oom_score_adj; /probe rlimit`)
	p := f.spec.Process
	p.Env = append(p.Env, "FOO=bar")
	p.Cwd = "/tmp/work"
	p.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 20}}
	p.Capabilities = &specs.LinuxCapabilities{}
	adj := 500
	p.OOMScoreAdj = &adj
	p.NoNewPrivileges = true
	// Far above this machine's hard limit: clamped, not refused.
	p.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1 << 30, Soft: 1 << 30}}
	var host unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &host); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{"bar", "/tmp/work", "1000 1000 [10 20]", "0000000000000000", "500",
		itoa(host.Max) + " " + itoa(host.Max)}, "\n")
	if got := f.runOK(t); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func itoa(u uint64) string { return strconv.FormatUint(u, 10) }

// TestRelativeCommand: a command named relative to the process's cwd
// ("./busybox" in /bin) is found there, as after the chdir.
func TestRelativeCommand(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "./busybox", "sh", "-c", "exit 7")
	f.spec.Process.Cwd = "/bin"
	if out, code := f.run(t); code != 7 {
		t.Errorf("exit code %d, want 7: %s", code, out)
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"true", []string{"true"}, 0},
		{"false", []string{"false"}, 1},
		{"exit 42", []string{"/probe", "exit", "42"}, 42},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.args...)
			if _, code := f.run(t); code != tc.want {
				t.Errorf("exit code %d, want %d", code, tc.want)
			}
		})
	}
}

func TestKill(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		sig  syscall.Signal
		want int
	}{
		{"SIGKILL is 137", []string{"/probe", "sleep", "1h"}, unix.SIGKILL, 137},
		{"SIGTERM reaches a handler", []string{"sh", "-c", `trap "exit 3" TERM; while :; do sleep 0.05; done`}, unix.SIGTERM, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tc.args...)
			c := f.create(t)
			ctx := context.Background()
			if err := c.Start(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // let the shell install its trap
			if err := c.Kill(tc.sig); err != nil {
				t.Fatal(err)
			}
			code, err := c.Wait(ctx)
			if err != nil || code != tc.want {
				t.Errorf("exit code %d (%v), want %d", code, err, tc.want)
			}
			st, _ := c.State()
			if st.Status != runtime.StatusStopped {
				t.Errorf("status %s, want stopped", st.Status)
			}
		})
	}
}

func TestMemoryLimitAndOOM(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "/probe", "alloc", "256")
	limit := int64(32 << 20)
	f.spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil || cgroups.HostMode() == 3 {
		f.spec.Linux.Resources.Memory.Swap = &limit // no swap beyond the limit
	}
	out, code := f.run(t)
	if code != 137 {
		t.Fatalf("exit code %d, want 137 (OOM kill); output %q", code, out)
	}
	c, err := f.rt.Load(f.id)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.State()
	if err != nil || !st.OOMKilled {
		t.Errorf("state %+v (%v): want OOMKilled", st, err)
	}
}

func TestPidsLimitStopsForkBomb(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "/probe", "forkbomb", "1000")
	pids := int64(16)
	f.spec.Linux.Resources.Pids = &specs.LinuxPids{Limit: &pids}
	out := f.runOK(t)
	n, rest, _ := strings.Cut(out, " ")
	if len(n) > 2 || !strings.Contains(rest, "resource temporarily unavailable") {
		t.Errorf("fork bomb not stopped by the pids limit: %q", out)
	}
}

func TestReadonlyRoot(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sh", "-c", "/probe write /x; /probe write /dev/shm/x")
	f.spec.Root.Readonly = true
	if got := f.runOK(t); got != "EROFS\nok" {
		t.Errorf("got %q, want EROFS for / and ok for /dev/shm", got)
	}
}

func TestMaskedPaths(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("/proc/timer_list")
	if err != nil || len(b) == 0 {
		t.Fatalf("host /proc/timer_list should be readable and non-empty: %v", err)
	}
	f := newFixture(t, "sh", "-c", "/probe read /proc/timer_list; /probe read /proc/interrupts; ls -A /sys/firmware | wc -l")
	if got := f.runOK(t); got != "0\n0\n0" {
		t.Errorf("masked paths readable: %q", got)
	}
}

func TestDeviceAllowlist(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sh", "-c", "/probe open /dev/kmsg; /probe open /dev/null")
	// The node may be made (mknod, "m") but not opened ("rw").
	major, minor := int64(1), int64(11)
	f.spec.Linux.Devices = append(f.spec.Linux.Devices, specs.LinuxDevice{Path: "/dev/kmsg", Type: "c", Major: major, Minor: minor})
	f.spec.Linux.Resources.Devices = append(f.spec.Linux.Resources.Devices,
		specs.LinuxDeviceCgroup{Allow: true, Type: "c", Major: &major, Minor: &minor, Access: "m"})
	if got := f.runOK(t); got != "EPERM\nok" {
		t.Errorf("got %q, want EPERM for /dev/kmsg and ok for /dev/null", got)
	}
}

func TestSeccompFromSpec(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sh", "-c", "mkdir /tmp/x 2>&1; /probe keyctl")
	eacces := uint(unix.EACCES)
	f.spec.Linux.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &eacces}},
	}
	got := f.runOK(t)
	if !strings.Contains(got, "Permission denied") || !strings.HasSuffix(got, "ENOSYS") && !strings.HasSuffix(got, "EINVAL") {
		t.Errorf("got %q: want mkdir denied with EACCES, keyctl allowed", got)
	}
}

func TestTerminal(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "/probe", "isatty")
	f.spec.Process.Terminal = true
	masters := make(chan *os.File, 1)
	c := f.create(t, runtime.WithConsole(func(m *os.File) error { masters <- m; return nil }))
	m := <-masters
	defer m.Close()
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := m.Read(buf)
	if got := strings.TrimSpace(string(buf[:n])); got != "true" {
		t.Errorf("stdin is not a terminal in the container: %q", got)
	}
	if code, _ := c.Wait(context.Background()); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// TestNoHostFdsLeak: nothing the runtime opened may reach the container
// process (CVE-2024-21626). The probe's own directory fd is the only extra.
func TestNoHostFdsLeak(t *testing.T) {
	t.Parallel()
	// busybox ls, not the probe: Go's runtime keeps cgroup files open.
	f := newFixture(t, "ls", "/proc/self/fd")
	if got := strings.Fields(f.runOK(t)); strings.Join(got, " ") != "0 1 2 3" {
		t.Errorf("fds in the container: %v, want 0 1 2 and ls's own 3", got)
	}
}

// TestInitIsSealed: init runs from a sealed memfd, so a container cannot
// reach the host binary through /proc/<pid>/exe (CVE-2019-5736).
func TestInitIsSealed(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "true")
	c := f.create(t)
	exe := filepath.Join("/proc", itoa(uint64(c.Pid())), "exe")
	target, err := os.Readlink(exe)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	if target == self {
		t.Fatalf("init runs from the host binary %s itself", target)
	}
	if w, err := os.OpenFile(exe, os.O_WRONLY, 0); err == nil {
		w.Close()
		t.Fatal("init's binary is writable")
	} else if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ETXTBSY) {
		t.Errorf("opening init's binary for writing: %v, want EROFS or EPERM", err)
	}
}

func TestUserNamespace(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sh", "-c", "/probe id; cat /proc/self/uid_map; /probe write /tmp/ok")
	// The mapped root must be able to reach the bundle.
	for d := f.bundle; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(f.bundle, "rootfs", "tmp"), 100000, 100000); err != nil {
		t.Fatal(err)
	}
	f.spec.Linux.Namespaces = append(f.spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	f.spec.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	f.spec.Linux.GIDMappings = f.spec.Linux.UIDMappings
	got := strings.Fields(f.runOK(t))
	want := []string{"0", "0", "[]", "0", "100000", "65536", "ok"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestSymlinkMountEscape: a symlink in the image that climbs out of the
// rootfs must resolve inside it when used as a mount destination.
func TestSymlinkMountEscape(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sh", "-c", "ls /escape/mnt >/dev/null && echo mounted")
	host := t.TempDir()
	rootfs := filepath.Join(f.bundle, "rootfs")
	if err := os.Symlink("/../../../../../.."+host, filepath.Join(rootfs, "escape")); err != nil {
		t.Fatal(err)
	}
	f.spec.Mounts = append(f.spec.Mounts, specs.Mount{Destination: "/escape/mnt", Type: "tmpfs", Source: "tmpfs"})
	if got := f.runOK(t); got != "mounted" {
		t.Errorf("got %q", got)
	}
	if ents, _ := os.ReadDir(host); len(ents) != 0 {
		t.Errorf("the mount escaped to the host: %s has %v", host, ents)
	}
	if _, err := os.Stat(filepath.Join(rootfs, host, "mnt")); err != nil {
		t.Errorf("mount point not made inside the rootfs: %v", err)
	}
}

// TestBindMounts: a host directory bound read-only (rbind, nosuid, nodev)
// is readable and not writable, and no_new_privs reaches the process.
func TestBindMounts(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sh", "-c", "cat /data/hello; /probe write /data/x; /probe write /rw/x; /probe status NoNewPrivs")
	ro, rw := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(ro, "hello"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.spec.Process.NoNewPrivileges = true
	f.spec.Mounts = append(f.spec.Mounts,
		specs.Mount{Destination: "/data", Type: "bind", Source: ro, Options: []string{"rbind", "ro", "nosuid", "nodev", "rprivate"}},
		specs.Mount{Destination: "/rw", Type: "bind", Source: rw, Options: []string{"bind"}})
	if got := f.runOK(t); got != "hi\nEROFS\nok\n1" {
		t.Errorf("got %q, want the read-only bind readable, not writable; the rw one writable; no_new_privs 1", got)
	}
	if _, err := os.Stat(filepath.Join(rw, "x")); err != nil {
		t.Errorf("write through the rw bind did not reach the host dir: %v", err)
	}
}

// TestProcessInItsCgroup: init joins its cgroup itself (one thread, through
// v1 tasks files the parent opened) before execve, also from inside a user
// namespace. Seen from the host, the container's process must be in the
// group in every hierarchy, and alone there: init's runtime threads, left
// outside, are gone.
func TestProcessInItsCgroup(t *testing.T) {
	for _, userns := range []bool{false, true} {
		t.Run("userns="+strconv.FormatBool(userns), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "sleep", "3600") // busybox: one thread
			if userns {
				for d := f.bundle; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
					if err := os.Chmod(d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				f.spec.Linux.Namespaces = append(f.spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
				f.spec.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
				f.spec.Linux.GIDMappings = f.spec.Linux.UIDMappings
			}
			c := f.create(t)
			if err := c.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			st, err := c.State()
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/cgroup")
			if err != nil {
				t.Fatal(err)
			}
			want := f.spec.Linux.CgroupsPath
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				parts := strings.SplitN(line, ":", 3)
				if len(parts) != 3 || parts[0] == "0" {
					continue // the v2 hierarchy of a hybrid host holds no limits
				}
				if parts[2] != want {
					t.Errorf("hierarchy %s: process in %s, want %s", parts[1], parts[2], want)
				}
			}
			if cgroups.HostMode() == 3 { // unified
				return
			}
			tasks, err := os.ReadFile(filepath.Join(cgroups.Root, "pids", want, "tasks"))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Fields(string(tasks)); len(got) != 1 || got[0] != strconv.Itoa(st.Pid) {
				t.Errorf("tasks of %s: %q, want only %d", want, got, st.Pid)
			}
		})
	}
}
