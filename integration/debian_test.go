package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/registry"
)

// TestDebianImage: the larger fixture, Debian 12 from debootstrap (made by
// scripts/make-debian-image.sh, cached in .cache/fixtures), goes through
// import, a registry round trip with equal digests, and runs bash.
func TestDebianImage(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	fixture, _ := filepath.Abs("../.cache/fixtures/debian-minbase.tar")
	if out, err := exec.Command("../scripts/make-debian-image.sh", fixture).CombinedOutput(); err != nil {
		t.Fatalf("make the Debian fixture: %v\n%s", err, out)
	}
	ctx := context.Background()
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	src := newImageStore(t)
	imported, err := src.Import(ctx, fixture, image.ImportOptions{Names: []string{"berth/debian:12"}})
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Addr + "/berth/debian:12"
	pushed, err := registry.New(src).Push(ctx, "berth/debian:12", ref, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := newImageStore(t)
	img, err := registry.New(dst).Pull(ctx, ref, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != imported.ID || img.Manifest.String() != pushed.String() || img.Layers[0].DiffID != imported.Layers[0].DiffID {
		t.Errorf("pulled %s (manifest %s), want %s (%s)", img.ID, img.Manifest, imported.ID, pushed)
	}
	out := runImage(t, dst, img, "/bin/bash", "-c", "cat /etc/debian_version; id -un; ls -ld /tmp")
	if f := strings.Fields(out); len(f) < 3 || !strings.HasPrefix(f[0], "12.") || f[1] != "root" || f[2] != "drwxrwxrwt" {
		t.Errorf("output %q: want Debian 12, root, a sticky /tmp", out)
	}
}
