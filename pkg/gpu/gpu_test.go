package gpu_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/gpu"
)

func newManager(t *testing.T, cfg gpu.Config) *gpu.Manager {
	t.Helper()
	if cfg.CDISpecDirs == nil {
		cfg.CDISpecDirs = []string{t.TempDir()} // none
	}
	m, err := gpu.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// baseSpec is a container spec with an image env and an /etc in its rootfs.
func baseSpec(t *testing.T, env ...string) (*specs.Spec, string) {
	rootfs := t.TempDir()
	if err := os.Mkdir(filepath.Join(rootfs, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &specs.Spec{Root: &specs.Root{Path: rootfs}, Process: &specs.Process{Env: env}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}, rootfs
}

func devicePaths(s *specs.Spec) []string {
	var out []string
	for _, d := range s.Linux.Devices {
		out = append(out, d.Path)
	}
	slices.Sort(out)
	return out
}

func envOf(s *specs.Spec, key string) string {
	v := ""
	for _, e := range s.Process.Env {
		if x, ok := strings.CutPrefix(e, key+"="); ok {
			v = x
		}
	}
	return v
}

// TestDiscoverFakeDriver: GPUs in bus order, UUIDs from the driver.
func TestDiscoverFakeDriver(t *testing.T) {
	root := testutil.FakeNvidia(t, 3)
	m := newManager(t, gpu.Config{DriverRoot: root})
	gpus, err := m.GPUs()
	if err != nil {
		t.Fatal(err)
	}
	var want []gpu.GPU
	for i := range 3 {
		u := testutil.FakeGPUUUID(i)
		want = append(want, gpu.GPU{ID: u, Index: i, UUID: u, Model: "NVIDIA Fake H100", Source: gpu.SourceNvidia})
	}
	if d := cmp.Diff(want, gpus); d != "" {
		t.Errorf("GPUs (-want +got):\n%s", d)
	}
}

// TestApplyNvidia: one GPU by index gets that node and the control nodes,
// device cgroup rules for exactly those, compute and utility libraries and
// nvidia-smi mounted read-only (no graphics library), the ldconfig hook,
// and NVIDIA_VISIBLE_DEVICES naming that GPU whatever the image said.
func TestApplyNvidia(t *testing.T) {
	root := testutil.FakeNvidia(t, 2)
	m := newManager(t, gpu.Config{DriverRoot: root})
	s, rootfs := baseSpec(t, "NVIDIA_VISIBLE_DEVICES=all")
	req, err := gpu.ParseRequests([]container.DeviceRequest{{DeviceIDs: []string{"1"}, Capabilities: [][]string{{"gpu"}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	held, err := m.Apply(s, req, nil, rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{testutil.FakeGPUUUID(1)}; !slices.Equal(held, want) {
		t.Errorf("held %v, want %v", held, want)
	}
	if got, want := devicePaths(s), []string{"/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia1", "/dev/nvidiactl"}; !slices.Equal(got, want) {
		t.Errorf("devices %v, want %v", got, want)
	}
	for _, d := range s.Linux.Devices {
		if d.Path == "/dev/nvidia1" && (d.Type != "c" || d.Major != 195 || d.Minor != 1) {
			t.Errorf("/dev/nvidia1 is %s %d:%d, want c 195:1", d.Type, d.Major, d.Minor)
		}
	}
	var rules []string
	for _, r := range s.Linux.Resources.Devices {
		rules = append(rules, r.Type+" "+itoa(r.Major)+":"+itoa(r.Minor)+" "+r.Access)
	}
	if want := []string{"c 195:1 rwm", "c 195:255 rwm", "c 511:0 rwm", "c 511:1 rwm"}; !slices.Equal(rules, want) {
		t.Errorf("device cgroup rules %v, want %v", rules, want)
	}
	var mounts []string
	for _, mt := range s.Mounts {
		if !slices.Contains(mt.Options, "ro") {
			t.Errorf("mount %s is not read-only: %v", mt.Destination, mt.Options)
		}
		if mt.Source != filepath.Join(root, mt.Destination) {
			t.Errorf("mount %s from %s, want the driver root's", mt.Destination, mt.Source)
		}
		mounts = append(mounts, mt.Destination)
	}
	lib := func(n string) string { return testutil.FakeLibDir + "/" + n + ".so." + testutil.FakeDriverVersion }
	want := []string{"/usr/bin/nvidia-smi", lib("libcuda"), lib("libnvidia-ml"), lib("libnvidia-nvvm"), lib("libnvidia-ptxjitcompiler")}
	if slices.Sort(mounts); !slices.Equal(mounts, want) {
		t.Errorf("mounts %v, want %v", mounts, want)
	}
	if got := envOf(s, "NVIDIA_VISIBLE_DEVICES"); got != testutil.FakeGPUUUID(1) {
		t.Errorf("NVIDIA_VISIBLE_DEVICES=%q, want only the GPU asked for", got)
	}
	if got := envOf(s, "NVIDIA_DRIVER_CAPABILITIES"); got != "compute,utility" {
		t.Errorf("NVIDIA_DRIVER_CAPABILITIES=%q", got)
	}
	if s.Hooks == nil || len(s.Hooks.CreateContainer) != 1 {
		t.Fatalf("hooks %+v, want one createContainer hook (ldconfig)", s.Hooks)
	}
	h := s.Hooks.CreateContainer[0]
	if want := []string{"ldconfig", "-r", rootfs, testutil.FakeLibDir}; !slices.Equal(h.Args, want) || len(h.Env) != 0 {
		t.Errorf("hook %s %v env %v, want ldconfig %v and no environment", h.Path, h.Args, h.Env, want)
	}
}

// TestApplyCapabilities: the request's capabilities replace the image's.
func TestApplyCapabilities(t *testing.T) {
	root := testutil.FakeNvidia(t, 1)
	m := newManager(t, gpu.Config{DriverRoot: root})
	s, rootfs := baseSpec(t, "NVIDIA_DRIVER_CAPABILITIES=compute")
	req, err := gpu.ParseRequests([]container.DeviceRequest{{Count: -1, Capabilities: [][]string{{"gpu", "graphics"}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(s, req, nil, rootfs); err != nil {
		t.Fatal(err)
	}
	if len(s.Mounts) != 1 || !strings.Contains(s.Mounts[0].Destination, "libnvidia-glcore") {
		t.Errorf("mounts %v, want the graphics library alone", s.Mounts)
	}
}

// TestPickLeastUsed: a count takes the GPUs the fewest containers hold.
func TestPickLeastUsed(t *testing.T) {
	root := testutil.FakeNvidia(t, 4)
	m := newManager(t, gpu.Config{DriverRoot: root})
	usage := map[string]int{testutil.FakeGPUUUID(0): 2, testutil.FakeGPUUUID(1): 1, testutil.FakeGPUUUID(3): 1}
	for _, tc := range []struct {
		count int
		want  []int
	}{{1, []int{2}}, {2, []int{1, 2}}, {3, []int{1, 2, 3}}, {-1, []int{0, 1, 2, 3}}} {
		s, rootfs := baseSpec(t)
		held, err := m.Apply(s, gpu.Request{Count: tc.count}, usage, rootfs)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, i := range tc.want {
			want = append(want, testutil.FakeGPUUUID(i))
		}
		if !slices.Equal(held, want) {
			t.Errorf("count %d: held %v, want GPUs %v", tc.count, held, tc.want)
		}
	}
	s, rootfs := baseSpec(t)
	if _, err := m.Apply(s, gpu.Request{Count: 5}, nil, rootfs); err == nil || !strings.Contains(err.Error(), "has 4") {
		t.Errorf("5 of 4 GPUs: %v", err)
	}
	if _, err := m.Apply(s, gpu.Request{IDs: []string{"7"}}, nil, rootfs); err == nil || !strings.Contains(err.Error(), `no GPU "7"`) {
		t.Errorf("GPU 7: %v", err)
	}
	if _, err := m.Apply(s, gpu.Request{IDs: []string{testutil.FakeGPUUUID(3)}}, nil, rootfs); err != nil {
		t.Errorf("GPU by UUID: %v", err)
	}
}

func TestNoGPU(t *testing.T) {
	m := newManager(t, gpu.Config{DriverRoot: t.TempDir()})
	s, rootfs := baseSpec(t)
	_, err := m.Apply(s, gpu.Request{Count: -1}, nil, rootfs)
	if err == nil || !strings.Contains(err.Error(), "no GPU found") {
		t.Errorf("no GPU: %v", err)
	}
}

// TestCDI: GPUs come from the CDI spec when it has nvidia.com/gpu, ahead
// of the driver; other CDI devices are injected by name.
func TestCDI(t *testing.T) {
	m := newManager(t, gpu.Config{CDISpecDirs: []string{"testdata/cdi"}, DriverRoot: t.TempDir()})
	gpus, err := m.GPUs()
	if err != nil {
		t.Fatal(err)
	}
	want := []gpu.GPU{{ID: "nvidia.com/gpu=0", Index: 0, Source: gpu.SourceCDI}, {ID: "nvidia.com/gpu=1", Index: 1, Source: gpu.SourceCDI}}
	if d := cmp.Diff(want, gpus); d != "" {
		t.Errorf("GPUs (-want +got):\n%s", d)
	}
	s, rootfs := baseSpec(t)
	req, err := gpu.ParseRequests(nil, []container.DeviceMapping{{PathOnHost: "example.com/fpga=a"}})
	if err != nil {
		t.Fatal(err)
	}
	req.Count = 1
	held, err := m.Apply(s, req, map[string]int{"nvidia.com/gpu=0": 1}, rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"nvidia.com/gpu=1", "example.com/fpga=a"}; !slices.Equal(held, want) {
		t.Errorf("held %v, want %v", held, want)
	}
	if got, want := devicePaths(s), []string{"/dev/fpga-a", "/dev/nvidia1", "/dev/nvidiactl"}; !slices.Equal(got, want) {
		t.Errorf("devices %v, want %v", got, want)
	}
	if envOf(s, "FPGA") != "a" || envOf(s, "NVIDIA_VISIBLE_DEVICES") != "void" {
		t.Errorf("env %v", s.Process.Env)
	}
	if s.Hooks == nil || len(s.Hooks.CreateContainer) != 1 || s.Hooks.CreateContainer[0].Path != "/usr/bin/nvidia-cdi-hook" {
		t.Errorf("hooks %+v, want the spec's createContainer hook", s.Hooks)
	}
	_, err = m.Apply(s, gpu.Request{CDI: []string{"example.com/fpga=b"}}, nil, rootfs)
	if err == nil || !strings.Contains(err.Error(), "example.com/fpga=b") {
		t.Errorf("unknown CDI device: %v", err)
	}
}

func TestParseRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		reqs []container.DeviceRequest
		want gpu.Request
		err  string
	}{
		{"all", []container.DeviceRequest{{Count: -1, Capabilities: [][]string{{"gpu"}}}}, gpu.Request{Count: -1}, ""},
		{"nvidia caps", []container.DeviceRequest{{Driver: "nvidia", Count: 2, Capabilities: [][]string{{"gpu", "compute", "video"}}}},
			gpu.Request{Count: 2, Capabilities: []string{"compute", "video"}}, ""},
		{"cdi", []container.DeviceRequest{{Driver: "cdi", DeviceIDs: []string{"nvidia.com/gpu=0"}}}, gpu.Request{CDI: []string{"nvidia.com/gpu=0"}}, ""},
		{"bad cdi", []container.DeviceRequest{{Driver: "cdi", DeviceIDs: []string{"gpu0"}}}, gpu.Request{}, "vendor.com/class=name"},
		{"other driver", []container.DeviceRequest{{Driver: "amd", Count: 1}}, gpu.Request{}, `device driver "amd"`},
		{"other caps", []container.DeviceRequest{{Count: 1, Capabilities: [][]string{{"tpu"}}}}, gpu.Request{}, "[[tpu]]"},
		{"both", []container.DeviceRequest{{Count: 1, DeviceIDs: []string{"0"}, Capabilities: [][]string{{"gpu"}}}}, gpu.Request{}, "both Count and DeviceIDs"},
	} {
		got, err := gpu.ParseRequests(tc.reqs, nil)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, d)
		}
	}
}

func itoa(p *int64) string {
	if p == nil {
		return "*"
	}
	return strconv.FormatInt(*p, 10)
}

// TestNoLDCacheHook: a read-only rootfs, or one without /etc (busybox,
// scratch: no dynamic loader to read a cache), gets no ldconfig hook.
func TestNoLDCacheHook(t *testing.T) {
	root := testutil.FakeNvidia(t, 1)
	m := newManager(t, gpu.Config{DriverRoot: root})
	ro, rootfs := baseSpec(t)
	ro.Root.Readonly = true
	noEtc := &specs.Spec{Root: &specs.Root{Path: t.TempDir()}, Process: &specs.Process{}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	for name, tc := range map[string]struct {
		s      *specs.Spec
		rootfs string
	}{"read-only": {ro, rootfs}, "no /etc": {noEtc, noEtc.Root.Path}} {
		if _, err := m.Apply(tc.s, gpu.Request{Count: 1}, nil, tc.rootfs); err != nil {
			t.Fatal(err)
		}
		if tc.s.Hooks != nil && len(tc.s.Hooks.CreateContainer) > 0 {
			t.Errorf("%s: hooks %+v, want none", name, tc.s.Hooks.CreateContainer)
		}
		if len(tc.s.Mounts) == 0 {
			t.Errorf("%s: no libraries mounted", name)
		}
	}
}
