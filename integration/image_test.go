package integration

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-containers/berth/internal/testutil"
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
	spec, err := runtime.DefaultSpec(mounted, args...)
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
