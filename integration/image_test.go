package integration

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/daemon"
	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/diff"
	"github.com/berth-containers/berth/pkg/image/registry"
	"github.com/berth-containers/berth/pkg/image/snapshot"
	"github.com/berth-containers/berth/pkg/runtime"
)

func newImageStore(t *testing.T) *image.Store { return testutil.ImageStore(t, "") }

// TestRunFromPulledImage: the busybox base image is imported, pushed to a
// real registry, pulled into another store, mounted as a snapshot and run
// by the runtime. The container's writes stay out of the image's layer.
func TestRunFromPulledImage(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	ctx := context.Background()
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})

	// The base image, from busybox-static, as a rootfs tarball.
	rootfs := t.TempDir()
	testutil.Rootfs(t, rootfs)
	tarPath := filepath.Join(t.TempDir(), "busybox.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := diff.Write(f, rootfs); err != nil {
		t.Fatal(err)
	}
	f.Close()
	src := newImageStore(t)
	if _, err := src.Import(ctx, tarPath, image.ImportOptions{Names: []string{"berth/busybox"}}); err != nil {
		t.Fatal(err)
	}
	ref := reg.Addr + "/berth/busybox:latest"
	if _, err := registry.New(src).Push(ctx, "berth/busybox", ref, nil, nil); err != nil {
		t.Fatal(err)
	}
	dst := newImageStore(t)
	img, err := registry.New(dst).Pull(ctx, ref, nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	out := runImage(t, dst, img, "sh", "-c", "echo written > /etc/motd; cat /etc/motd; /probe id")
	if got := strings.Fields(out); len(got) < 2 || got[0] != "written" || got[1] != "0" {
		t.Errorf("output %q, want the written line and uid 0", out)
	}
	layer := dst.LayerDirs(img)[0]
	if _, err := os.Stat(filepath.Join(layer, "etc", "motd")); !os.IsNotExist(err) {
		t.Errorf("the container wrote into the image's layer: %v", err)
	}
}

// runImage runs args in a container of img (a snapshot of its layers,
// removed at cleanup) and returns its output; it fails on a non-zero exit.
func runImage(t *testing.T, s *image.Store, img *image.Image, args ...string) string {
	t.Helper()
	return runImageSpec(t, s, img, func(rootfs string) (*specs.Spec, error) { return runtime.DefaultSpec(rootfs, args...) })
}

// runImageSpec is runImage with the spec built by build for the mounted rootfs.
func runImageSpec(t *testing.T, s *image.Store, img *image.Image, build func(rootfs string) (*specs.Spec, error)) string {
	t.Helper()
	ctx := context.Background()
	drv := snapshot.Default()
	snap := filepath.Join(t.TempDir(), "snap")
	mounted, err := drv.Mount(s.LayerDirs(img), snap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := snapshot.Remove(drv, snap); err != nil {
			t.Error(err)
		}
	})
	bundle := t.TempDir()
	spec, err := build(mounted)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	spec.Linux.CgroupsPath = "/berth-itest-image/" + id
	testutil.WriteSpec(t, bundle, spec)
	rt, err := runtime.New(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := rt.Create(ctx, id, bundle, runtime.WithStdio(nil, w, w))
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Delete(context.Background(), true)
		os.Remove("/sys/fs/cgroup/memory/berth-itest-image")
		for _, d := range mustGlob("/sys/fs/cgroup/*/berth-itest-image") {
			os.Remove(d)
		}
	})
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.Start(wctx); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	if code, err := c.Wait(wctx); err != nil || code != 0 {
		t.Fatalf("exit %d (%v), output %q", code, err, out)
	}
	return string(out)
}

// TestContainerSpecRuns: a spec made by daemon.ContainerSpec from an
// image's config and a HostConfig (memory limit, read-only bind, read-only
// root, no capabilities) runs, and each setting holds inside.
func TestContainerSpecRuns(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	ctx := context.Background()
	s := newImageStore(t)
	img, err := s.Import(ctx, busyboxTar(t), image.ImportOptions{Names: []string{"berth/busybox"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := s.Config(img)
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "hello"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := "cat /data/hello; touch /x 2>/dev/null || echo root-ro; touch /data/y 2>/dev/null || echo bind-ro; " +
		"grep CapEff /proc/self/status; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
	rc, err := image.RunConfigOf(cfg, image.Overrides{Cmd: []string{"sh", "-c", script}})
	if err != nil {
		t.Fatal(err)
	}
	hc := &container.HostConfig{Resources: container.Resources{Memory: 32 << 20}, Binds: []string{data + ":/data:ro"},
		ReadonlyRootfs: true, CapDrop: []string{"ALL"}, NetworkMode: "none"}
	out := runImageSpec(t, s, img, func(rootfs string) (*specs.Spec, error) {
		return daemon.ContainerSpec(rootfs, rc, &container.Config{}, hc)
	})
	want := []string{"from the host", "root-ro", "bind-ro", "CapEff:\t0000000000000000", "33554432"}
	got := strings.Split(strings.TrimSpace(out), "\n")
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("output %q, want %q", got, want)
	}
}
