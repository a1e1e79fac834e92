package runtime_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/cgroups"
	"github.com/berth-containers/berth/pkg/runtime"
)

// leakSnapshot counts what a container could leave behind in this process
// and on the host.
type leakSnapshot struct {
	fds, mounts, zombies int
}

func snapshot(t *testing.T) leakSnapshot {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	// Only mounts under this test's directories: tests running beside it
	// mount and unmount their own.
	mounts := strings.Count(string(mi), os.TempDir()+"/"+strings.SplitN(t.Name(), "/", 2)[0])
	return leakSnapshot{fds: len(fds), mounts: mounts, zombies: zombies(t)}
}

// zombies counts this process's children that exited and were not reaped.
func zombies(t *testing.T) int {
	t.Helper()
	n := 0
	ents, _ := os.ReadDir("/proc")
	me := itoa(uint64(os.Getpid()))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == me {
			n++
		}
	}
	return n
}

func cgroupDirs(p string) []string {
	matches, _ := filepath.Glob(filepath.Join(cgroups.Root, "*", p))
	if m, _ := filepath.Glob(filepath.Join(cgroups.Root, p)); len(m) > 0 {
		matches = append(matches, m...)
	}
	return matches
}

// TestCreateDeleteCycles runs 200 create/start/wait/delete cycles (not in
// parallel, so the counts are this test's alone) and checks that no fd,
// mount, cgroup, zombie or state directory is left.
func TestCreateDeleteCycles(t *testing.T) {
	f := newFixture(t, "true")
	testWriteSpec(t, f)
	ctx := context.Background()
	cycle := func() {
		c, err := f.rt.Create(ctx, f.id, f.bundle)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if code, err := c.Wait(ctx); err != nil || code != 0 {
			t.Fatalf("exit %d: %v", code, err)
		}
		if err := c.Delete(ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	cycle() // warm up: the sealed binary copy and the first goroutines stay
	before := snapshot(t)
	for i := 0; i < 200; i++ {
		cycle()
	}
	after := snapshot(t)
	if after != before {
		t.Errorf("leak after 200 cycles: before %+v, after %+v", before, after)
	}
	if dirs := cgroupDirs(f.spec.Linux.CgroupsPath); len(dirs) > 0 {
		t.Errorf("cgroups left: %v", dirs)
	}
	if ids, _ := f.rt.List(); len(ids) > 0 {
		t.Errorf("state left: %v", ids)
	}
}

func testWriteSpec(t *testing.T, f *fixture) {
	t.Helper()
	b := f.bundle
	writeSpec(t, b, f.spec)
}

// TestBadInput: each bad bundle is refused with an error naming the cause,
// and nothing is left: no state, no cgroup, no process.
func TestBadInput(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(f *fixture)
		raw    string // config.json content instead of the spec
		want   string
	}{
		{name: "malformed config.json", raw: `{"ociVersion": "1.0.2", "process": {`, want: "config.json"},
		{name: "missing rootfs", mutate: func(f *fixture) { f.spec.Root.Path = "nope" }, want: "rootfs"},
		{name: "relative mount destination", mutate: func(f *fixture) {
			f.spec.Mounts = append(f.spec.Mounts, specs.Mount{Destination: "tmp/x", Type: "tmpfs", Source: "tmpfs"})
		}, want: `destination "tmp/x" is not an absolute path`},
		{name: "escaping mount destination", mutate: func(f *fixture) {
			f.spec.Mounts = append(f.spec.Mounts, specs.Mount{Destination: "/tmp/../../etc", Type: "tmpfs", Source: "tmpfs"})
		}, want: `contains ".."`},
		{name: "missing binary", mutate: func(f *fixture) { f.spec.Process.Args = []string{"/nope"} }, want: `exec "/nope": no such file or directory`},
		{name: "binary not in PATH", mutate: func(f *fixture) { f.spec.Process.Args = []string{"nope"} }, want: "executable file not found in $PATH"},
		{name: "unknown filesystem", mutate: func(f *fixture) {
			f.spec.Mounts = append(f.spec.Mounts, specs.Mount{Destination: "/x", Type: "nofs", Source: "x"})
		}, want: "fsopen nofs"},
		{name: "missing bind source", mutate: func(f *fixture) {
			f.spec.Mounts = append(f.spec.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "/does/not/exist", Options: []string{"rbind"}})
		}, want: "bind source /does/not/exist"},
		{name: "unknown capability", mutate: func(f *fixture) {
			f.spec.Process.Capabilities.Bounding = append(f.spec.Process.Capabilities.Bounding, "CAP_NOPE")
		}, want: `capability "CAP_NOPE"`},
		{name: "joining a mount namespace", mutate: func(f *fixture) {
			f.spec.Linux.Namespaces = append(f.spec.Linux.Namespaces[:4], specs.LinuxNamespace{Type: specs.MountNamespace, Path: "/proc/1/ns/mnt"})
		}, want: "not supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "true")
			if tc.mutate != nil {
				tc.mutate(f)
			}
			writeSpec(t, f.bundle, f.spec)
			if tc.raw != "" {
				if err := os.WriteFile(filepath.Join(f.bundle, "config.json"), []byte(tc.raw), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c, err := f.rt.Create(context.Background(), f.id, f.bundle)
			if err == nil {
				_ = c.Delete(context.Background(), true)
				t.Fatal("create succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name the cause %q", err, tc.want)
			}
			if ids, _ := f.rt.List(); len(ids) > 0 {
				t.Errorf("state left: %v", ids)
			}
			if _, err := f.rt.Load(f.id); !errors.Is(err, runtime.ErrNotFound) {
				t.Errorf("load after failed create: %v", err)
			}
			if dirs := cgroupDirs(f.spec.Linux.CgroupsPath); len(dirs) > 0 {
				t.Errorf("cgroups left: %v", dirs)
			}
		})
	}
}

func TestDuplicateIDAndWrongStates(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "/probe", "sleep", "1h")
	c := f.create(t)
	if _, err := f.rt.Create(context.Background(), f.id, f.bundle); !errors.Is(err, runtime.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	if st, _ := c.State(); st.Status != runtime.StatusCreated || st.Pid == 0 {
		t.Errorf("state after create: %+v", st)
	}
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); !errors.Is(err, runtime.ErrWrongState) {
		t.Errorf("second start: %v", err)
	}
	if err := c.Delete(ctx, false); !errors.Is(err, runtime.ErrNotStopped) {
		t.Errorf("delete of a running container: %v", err)
	}
	if err := c.Delete(ctx, true); err != nil {
		t.Errorf("forced delete: %v", err)
	}
}

// TestHandOver: a handed-over init is never reaped by the runtime: its
// exit waits, a zombie, for the caller's successor (here the test
// itself); and one that ended and was reaped before reports its code.
func TestHandOver(t *testing.T) {
	t.Run("running", func(t *testing.T) {
		f := newFixture(t, "sh", "-c", "sleep 0.2; exit 9")
		c := f.create(t)
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, exited := c.HandOver(); exited {
			t.Fatal("HandOver says a sleeping init ended")
		}
		// Only the exit observed, never reaped: wait4 finds it.
		var ws unix.WaitStatus
		if _, err := unix.Wait4(c.Pid(), &ws, 0, nil); err != nil {
			t.Fatalf("wait4 of the handed-over init: %v", err)
		}
		if ws.ExitStatus() != 9 {
			t.Errorf("exit status %d, want 9", ws.ExitStatus())
		}
	})
	t.Run("ended", func(t *testing.T) {
		f := newFixture(t, "sh", "-c", "exit 4")
		c := f.create(t)
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		if code, exited := c.HandOver(); !exited || code != 4 {
			t.Errorf("HandOver after the end: code %d, exited %v; want 4, true", code, exited)
		}
	})
}
