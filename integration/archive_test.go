package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/image"
)

// TestArchivesWithSkopeo: archives berth saves are read by skopeo, and
// archives skopeo writes (docker-archive and OCI layout) load into berth
// with the same layers.
func TestArchivesWithSkopeo(t *testing.T) {
	testutil.RequiresRoot(t)
	skopeo := testutil.Require(t, "skopeo")
	t.Parallel()
	ctx := context.Background()
	src := newImageStore(t)
	rnd, err := random.Image(32<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := src.Put(ctx, rnd, image.PutOptions{Names: []string{"interop/app:v1"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ours := filepath.Join(dir, "ours.tar")
	f, err := os.Create(ours)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Save(f, []string{"interop/app:v1"}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(skopeo, args...).CombinedOutput(); err != nil {
			t.Fatalf("skopeo %v: %v\n%s", args, err, out)
		}
	}
	layout := filepath.Join(dir, "layout")
	run("copy", "-q", "docker-archive:"+ours, "oci:"+layout+":v1")
	theirs := filepath.Join(dir, "theirs.tar")
	run("copy", "-q", "oci:"+layout+":v1", "docker-archive:"+theirs+":interop/app:v1")

	if _, err := src.Load(ctx, theirs, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Get("interop/app:v1"); err != nil {
		t.Errorf("skopeo's docker-archive lost the name: %v", err)
	}
	for _, p := range []string{layout, theirs} {
		dst := newImageStore(t)
		loaded, err := dst.Load(ctx, p, nil)
		if err != nil {
			t.Fatalf("load %s: %v", p, err)
		}
		// skopeo rewrites the config when it converts between Docker and
		// OCI formats, so the ID may change; the layers may not.
		if len(loaded) != 1 || len(loaded[0].Layers) != len(orig.Layers) {
			t.Fatalf("load %s: %d images, want one with %d layers", p, len(loaded), len(orig.Layers))
		}
		for i, l := range loaded[0].Layers {
			if l.DiffID != orig.Layers[i].DiffID {
				t.Errorf("load %s: layer %d diff ID %s, want %s", p, i, l.DiffID, orig.Layers[i].DiffID)
			}
		}
	}
}
