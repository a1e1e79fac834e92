package image_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/image"
)

// reopen opens the store again as after a restart, in boot.
func reopen(t *testing.T, s *image.Store, root, boot string) *image.Store {
	t.Helper()
	s2, err := image.New(root, s.DB(), image.WithBootID(boot), image.WithManualFlush())
	if err != nil {
		t.Fatal(err)
	}
	return s2
}

// TestCrashBeforeFlush: an image pulled just before the machine crashed,
// whose data was never flushed, is gone after the reboot, with its layers
// and blobs; one flushed before the crash stays.
func TestCrashBeforeFlush(t *testing.T) {
	testutil.RequiresRoot(t)
	root := t.TempDir()
	db, err := image.OpenDB(root)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := image.New(root, db, image.WithBootID("boot-1"), image.WithManualFlush())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kept, err := s.Put(ctx, randomImage(t, 2), image.PutOptions{Names: []string{"flushed"}})
	if err != nil {
		t.Fatal(err)
	}
	if kept.Pending != "boot-1" {
		t.Errorf("a fresh image is pending %q, want boot-1", kept.Pending)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	lost, err := s.Put(ctx, randomImage(t, 2), image.PutOptions{Names: []string{"lost"}})
	if err != nil {
		t.Fatal(err)
	}

	// Same boot (berthd restarted, or killed): nothing is lost.
	s = reopen(t, s, root, "boot-1")
	if _, err := s.Get("lost"); err != nil {
		t.Errorf("same boot: pending image dropped: %v", err)
	}

	// Another boot: the machine crashed before the flush.
	s = reopen(t, s, root, "boot-2")
	if _, err := s.Get("lost"); !errdefs.IsNotFound(err) {
		t.Errorf("after a crash: unflushed image still there: %v", err)
	}
	for _, d := range s.LayerDirs(lost) {
		if _, err := os.Stat(filepath.Dir(d)); !os.IsNotExist(err) {
			t.Errorf("after a crash: its layer %s survived", d)
		}
	}
	for _, b := range []string{lost.Manifest.String(), lost.Layers[0].Digest.String()} {
		if _, err := os.Stat(filepath.Join(root, "blobs", "sha256", b[len("sha256:"):])); !os.IsNotExist(err) {
			t.Errorf("after a crash: its blob %s survived", b)
		}
	}
	img, err := s.Get("flushed")
	if err != nil || img.Pending != "" {
		t.Fatalf("the flushed image: %v %v", img, err)
	}
	for _, d := range s.LayerDirs(img) {
		if _, err := os.Stat(d); err != nil {
			t.Error(err)
		}
	}
}
