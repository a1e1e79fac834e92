package image_test

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-containers/berth/pkg/image"
)

func TestImportSaveLoad(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	// A rootfs tarball to import.
	tarPath := filepath.Join(t.TempDir(), "rootfs.tar")
	f, _ := os.Create(tarPath)
	tw := tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "bin/hello", Typeflag: tar.TypeReg, Mode: 0o755, Size: 5})
	tw.Write([]byte("hello"))
	tw.Close()
	f.Close()
	imported, err := s.Import(ctx, tarPath, image.ImportOptions{Names: []string{"local/base:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(s.LayerDirs(imported)[0], "bin/hello")); err != nil || string(b) != "hello" {
		t.Errorf("imported layer: %q %v", b, err)
	}
	cfg, err := s.Config(imported)
	if err != nil || cfg.OS != "linux" || len(cfg.History) != 1 {
		t.Errorf("imported config %+v %v", cfg, err)
	}
	extra, _ := s.Put(ctx, randomImage(t, 2), image.PutOptions{Names: []string{"other:v2"}})
	dir := t.TempDir()

	// docker save format, two images, into a fresh store.
	archive := filepath.Join(dir, "images.tar")
	out, _ := os.Create(archive)
	if err := s.Save(out, []string{"local/base:1", "other:v2"}); err != nil {
		t.Fatal(err)
	}
	out.Close()
	s2, _ := newStore(t)
	loaded, err := s2.Load(ctx, archive, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkLoaded(t, s2, loaded, map[string]*image.Image{"local/base:1": imported, "other:v2": extra})

	// OCI layout directory, and the same layout as a tarball.
	layoutDir := filepath.Join(dir, "layout")
	if err := s.SaveLayout(layoutDir, []string{"local/base:1", "other:v2"}); err != nil {
		t.Fatal(err)
	}
	s3, _ := newStore(t)
	loaded, err = s3.Load(ctx, layoutDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkLoaded(t, s3, loaded, map[string]*image.Image{"local/base:1": imported, "other:v2": extra})
	layoutTar := filepath.Join(dir, "layout.tar")
	tarDir(t, layoutDir, layoutTar)
	s4, _ := newStore(t)
	if loaded, err = s4.Load(ctx, layoutTar, nil); err != nil {
		t.Fatal(err)
	}
	checkLoaded(t, s4, loaded, map[string]*image.Image{"local/base:1": imported, "other:v2": extra})

	// Not an archive at all.
	if _, err := s4.Load(ctx, tarPath, nil); err == nil {
		t.Error("loading a rootfs tarball as an image archive succeeded")
	}
}

func checkLoaded(t *testing.T, s *image.Store, loaded []*image.Image, want map[string]*image.Image) {
	t.Helper()
	if len(loaded) != len(want) {
		t.Fatalf("loaded %d images, want %d", len(loaded), len(want))
	}
	for name, w := range want {
		got, err := s.Get(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got.ID != w.ID || got.Manifest != w.Manifest {
			t.Errorf("%s: id %s manifest %s, want %s %s", name, got.ID, got.Manifest, w.ID, w.Manifest)
		}
	}
}

func tarDir(t *testing.T, dir, out string) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	defer tw.Close()
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
}
