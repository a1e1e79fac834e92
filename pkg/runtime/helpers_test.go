package runtime_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/cgroups"
	"github.com/berth-containers/berth/pkg/runtime"
)

func TestMain(m *testing.M) {
	if runtime.IsInit() {
		runtime.Init()
	}
	code := m.Run()
	cgroups.RemoveParents(cgroupParent())
	testutil.RemoveBuilds()
	os.Exit(code)
}

// fixture is a runtime root plus a bundle with a busybox+probe rootfs.
type fixture struct {
	rt     *runtime.Runtime
	bundle string
	spec   *specs.Spec
	id     string
}

var nonID = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

func newFixture(t *testing.T, args ...string) *fixture {
	t.Helper()
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	f := &fixture{bundle: filepath.Join(dir, "bundle")}
	testutil.Rootfs(t, filepath.Join(f.bundle, "rootfs"))
	var err error
	if f.rt, err = runtime.New(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	if f.spec, err = runtime.DefaultSpec("rootfs", args...); err != nil {
		t.Fatal(err)
	}
	f.id = strings.ToLower(nonID.ReplaceAllString(t.Name(), "-"))
	if len(f.id) > 60 {
		f.id = f.id[len(f.id)-60:]
	}
	f.spec.Linux.CgroupsPath = cgroupParent() + "/" + f.id
	return f
}

// cgroupParent groups this test binary's containers; TestMain removes it.
func cgroupParent() string { return fmt.Sprintf("/berth-test-%d", os.Getpid()) }

// create writes the spec and creates the container, deleting it at cleanup.
func (f *fixture) create(t *testing.T, opts ...runtime.CreateOpt) *runtime.Container {
	t.Helper()
	testutil.WriteSpec(t, f.bundle, f.spec)
	c, err := f.rt.Create(context.Background(), f.id, f.bundle, opts...)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Delete(context.Background(), true); err != nil {
			t.Errorf("delete: %v", err)
		}
	})
	return c
}

// run runs the container to its end and returns its output and exit code.
func (f *fixture) run(t *testing.T) (string, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := f.create(t, runtime.WithStdio(nil, w, w))
	w.Close()
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	code, err := c.Wait(ctx)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	return <-out, code
}

// runOK runs the container, wants exit code 0 and returns its trimmed output.
func (f *fixture) runOK(t *testing.T) string {
	t.Helper()
	out, code := f.run(t)
	if code != 0 {
		t.Fatalf("exit code %d, output:\n%s", code, out)
	}
	return strings.TrimSpace(out)
}

func writeSpec(t *testing.T, bundle string, s *specs.Spec) {
	t.Helper()
	testutil.WriteSpec(t, bundle, s)
}
