package cgroups_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/cgroups"
)

func TestValidatePath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"", true}, {"/berth/web", true}, {"berth/web", true},
		{"system.slice:berth:web", false}, {"/berth/../../etc", false},
	} {
		if err := cgroups.ValidatePath(tc.path); (err == nil) != tc.ok {
			t.Errorf("ValidatePath(%q) = %v, want ok=%v", tc.path, err, tc.ok)
		}
	}
}

func read(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestLimitsApplied creates a group with every kind of limit and reads the
// kernel's files back, on whichever layout this host has.
func TestLimitsApplied(t *testing.T) {
	testutil.RequiresRoot(t)
	p := fmt.Sprintf("/berth-cgtest-%d/limits", os.Getpid())
	mem, swap, res := int64(64<<20), int64(64<<20), int64(32<<20)
	shares, quota, period, pids := uint64(512), int64(50000), uint64(100000), int64(42)
	r := &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &mem, Reservation: &res},
		CPU:    &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &period, Cpus: "0"},
		Pids:   &specs.LinuxPids{Limit: &pids},
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err == nil {
		r.Memory.Swap = &swap
	}
	m, err := cgroups.New(p, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Delete(); cgroups.RemoveParents(filepath.Dir(p)) })
	if err := m.Add(os.Getpid()); err == nil {
		t.Log("moved the test process in; moving it back out is not needed for v1 reads")
	}
	root := cgroups.Root
	if cgroups.HostMode() == 3 { // unified
		checks := map[string]string{"memory.max": "67108864", "memory.low": "33554432", "pids.max": "42", "cpu.max": "50000 100000", "cpuset.cpus": "0"}
		for f, want := range checks {
			if got := read(t, filepath.Join(root, p, f)); got != want {
				t.Errorf("%s = %q, want %q", f, got, want)
			}
		}
	} else {
		checks := map[string]string{
			"memory/memory.limit_in_bytes": "67108864", "memory/memory.soft_limit_in_bytes": "33554432",
			"cpu/cpu.shares": "512", "cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000",
			"cpuset/cpuset.cpus": "0", "pids/pids.max": "42",
		}
		for f, want := range checks {
			dir, file := filepath.Split(f)
			if got := read(t, filepath.Join(root, dir, p, file)); got != want {
				t.Errorf("%s = %q, want %q", f, got, want)
			}
		}
		if devs := read(t, filepath.Join(root, "devices", p, "devices.list")); !strings.Contains(devs, "c 1:3 rwm") || strings.Contains(devs, "a *:* rwm") {
			t.Errorf("devices.list: %q, want the default allowlist only", devs)
		}
	}
	st, err := m.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryLimit != uint64(mem) || st.Pids == 0 {
		t.Errorf("stats %+v: want limit %d and our own process counted", st, mem)
	}
	if m.OOMKilled() {
		t.Error("OOMKilled on a fresh group")
	}
	// Move ourselves back to the root group so the group can go.
	for _, d := range append([]string{filepath.Join(root, "cgroup.procs")}, mustGlob(t, filepath.Join(root, "*", "cgroup.procs"))...) {
		_ = os.WriteFile(d, []byte(fmt.Sprint(os.Getpid())), 0)
	}
	if err := m.Delete(); err != nil {
		t.Fatal(err)
	}
	cgroups.RemoveParents(filepath.Dir(p))
	if left := mustGlob(t, filepath.Join(root, "*", filepath.Dir(p))); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
