package image_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/image"
)

func newStore(t *testing.T) (*image.Store, string) {
	t.Helper()
	root := t.TempDir()
	return testutil.ImageStore(t, root), root
}

func randomImage(t *testing.T, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(4096, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestPutGetRoundTrip(t *testing.T) {
	s, _ := newStore(t)
	src := randomImage(t, 3)
	got, err := s.Put(context.Background(), src, image.PutOptions{Names: []string{"alice/model", "localhost:5000/x:v1"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"docker.io/alice/model:latest", "localhost:5000/x:v1"}
	if len(got.Names) != 2 || got.Names[0] != want[0] || got.Names[1] != want[1] {
		t.Errorf("names %v, want %v", got.Names, want)
	}
	for _, ref := range []string{"alice/model", "alice/model:latest", got.ID.String(), got.ID.Encoded()[:12]} {
		if img, err := s.Get(ref); err != nil || img.ID != got.ID {
			t.Errorf("Get(%q) = %v, %v", ref, img, err)
		}
	}
	if _, err := s.Get("nosuch"); !errdefs.IsNotFound(err) {
		t.Errorf("Get(nosuch) = %v, want not found", err)
	}
	for _, d := range s.LayerDirs(got) {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Errorf("layer dir %s: %v", d, err)
		}
	}
	// The stored image is the same image, digest for digest.
	back, err := s.Image(got)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := src.Digest()
	d2, err := back.Digest()
	if err != nil || d1 != d2 || got.Manifest.String() != d1.String() {
		t.Errorf("digest %s (stored manifest %s), want %s (%v)", d2, got.Manifest, d1, err)
	}
	l1, _ := src.Layers()
	l2, _ := back.Layers()
	for i := range l1 {
		a, _ := l1[i].Digest()
		b, _ := l2[i].Digest()
		if a != b {
			t.Errorf("layer %d digest %s, want %s", i, b, a)
		}
	}
}

// corruptLayer serves other bytes than its digest promises.
type corruptLayer struct{ v1.Layer }

func (c corruptLayer) Compressed() (io.ReadCloser, error) {
	other, _ := random.Layer(4096, types.DockerLayer)
	return other.Compressed()
}

// TestFailedPutLeavesNothing: a layer whose content does not match its
// digest fails the Put, and no image, layer dir or temporary file is left.
func TestFailedPutLeavesNothing(t *testing.T) {
	s, root := newStore(t)
	src := randomImage(t, 2)
	layers, _ := src.Layers()
	bad, err := mutate.AppendLayers(src, corruptLayer{layers[0]})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Put(context.Background(), bad, image.PutOptions{Names: []string{"bad"}})
	if err == nil {
		t.Fatal("Put of a corrupt layer succeeded")
	}
	t.Log(err)
	if _, err := s.Get("bad"); !errdefs.IsNotFound(err) {
		t.Errorf("image recorded after a failed Put: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "tmp", "*")); len(left) != 0 {
		t.Errorf("tmp/ holds %v", left)
	}
	// Layers that did unpack stay for the next try; the next New removes
	// them, as no image uses them.
	if _, err := image.New(root, s.DB()); err != nil {
		t.Fatal(err)
	}
	if dirs, _ := os.ReadDir(filepath.Join(root, "layers")); len(dirs) != 0 {
		t.Errorf("%d layer dirs left by a failed Put after reopening", len(dirs))
	}
}

func TestConcurrentPutsShareLayers(t *testing.T) {
	s, _ := newStore(t)
	src := randomImage(t, 3)
	var fetched, existed atomic.Int32
	progress := func(p image.Progress) {
		switch p.Status {
		case "Pull complete":
			fetched.Add(1)
		case "Already exists":
			existed.Add(1)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, name := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Put(context.Background(), src, image.PutOptions{Names: []string{name}, Progress: progress})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if fetched.Load() != 3 || existed.Load() != 3 {
		t.Errorf("layers fetched %d times and found %d times, want 3 and 3", fetched.Load(), existed.Load())
	}
	a, _ := s.Get("a")
	b, _ := s.Get("b")
	if a.ID != b.ID || len(a.Names) != 2 {
		t.Errorf("a %v b %v: want one image with two names", a, b)
	}
}

func TestRemoveAndPrune(t *testing.T) {
	s, root := newStore(t)
	ctx := context.Background()
	base := randomImage(t, 2)
	top, err := mutate.AppendLayers(base, mustLayer(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, base, image.PutOptions{Names: []string{"base", "base:v2"}}); err != nil {
		t.Fatal(err)
	}
	topImg, err := s.Put(ctx, top, image.PutOptions{Names: []string{"top"}})
	if err != nil {
		t.Fatal(err)
	}
	inUse := func(id digest.Digest) bool { return id == topImg.ID }
	if _, err := s.Remove("top", image.RemoveOptions{InUse: inUse}); !errdefs.IsConflict(err) {
		t.Errorf("removing an image in use: %v, want conflict", err)
	}
	base1, _ := s.Get("base")
	if _, err := s.Remove(base1.ID.String(), image.RemoveOptions{}); !errdefs.IsConflict(err) {
		t.Errorf("removing by ID an image with two names: %v, want conflict", err)
	}
	res, err := s.Remove("base", image.RemoveOptions{})
	if err != nil || len(res.Untagged) != 1 || len(res.Deleted) != 0 {
		t.Errorf("untag base: %+v %v", res, err)
	}
	res, err = s.Remove("base:v2", image.RemoveOptions{})
	if err != nil || len(res.Deleted) != 1 {
		t.Errorf("remove base:v2: %+v %v", res, err)
	}
	// top shares base's two layers: they must survive.
	for _, d := range s.LayerDirs(topImg) {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("shared layer removed: %v", err)
		}
	}
	// Forced while in use: untagged only, its layers stay for the container.
	res, err = s.Remove("top", image.RemoveOptions{Force: true, InUse: inUse})
	if err != nil || len(res.Untagged) != 1 || len(res.Deleted) != 0 {
		t.Errorf("forced removal of an image in use: %+v %v, want untag only", res, err)
	}
	for _, d := range s.LayerDirs(topImg) {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("layer of an image in use removed: %v", err)
		}
	}
	if _, err := s.Remove(topImg.ID.String(), image.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	if dirs, _ := os.ReadDir(filepath.Join(root, "layers")); len(dirs) != 0 {
		t.Errorf("%d layer dirs left after removing every image", len(dirs))
	}
	if blobs, _ := os.ReadDir(filepath.Join(root, "blobs", "sha256")); len(blobs) != 0 {
		t.Errorf("%d blobs left after removing every image", len(blobs))
	}
	// Prune: a dangling image goes, a named one stays.
	if _, err := s.Put(ctx, randomImage(t, 1), image.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, randomImage(t, 1), image.PutOptions{Names: []string{"kept"}}); err != nil {
		t.Fatal(err)
	}
	deleted, err := s.Prune(false, nil)
	if err != nil || len(deleted) != 1 {
		t.Errorf("prune: %v %v, want one dangling image deleted", deleted, err)
	}
	if _, err := s.Get("kept"); err != nil {
		t.Errorf("prune removed a named image: %v", err)
	}
}

func mustLayer(t *testing.T) v1.Layer {
	l, err := random.Layer(4096, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestNewCleansLeftovers: what a killed pull left (a half-unpacked layer
// in tmp/, an unrecorded layer dir, an unreferenced blob) is gone after
// the next New.
func TestNewCleansLeftovers(t *testing.T) {
	s, root := newStore(t)
	if _, err := s.Put(context.Background(), randomImage(t, 1), image.PutOptions{Names: []string{"kept"}}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "tmp", "unpack-123", "diff", "etc"), 0o755)
	os.MkdirAll(filepath.Join(root, "layers", "deadbeef", "diff"), 0o755)
	orphan, err := s.Content().WriteBytes([]byte("orphan blob"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.New(root, s.DB()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "tmp", "unpack-123")); !os.IsNotExist(err) {
		t.Error("tmp/unpack-123 survived")
	}
	if _, err := os.Stat(filepath.Join(root, "layers", "deadbeef")); !os.IsNotExist(err) {
		t.Error("unrecorded layer dir survived")
	}
	if _, err := s.Content().Info(orphan); !errdefs.IsNotFound(err) {
		t.Errorf("orphan blob survived: %v", err)
	}
	img, err := s.Get("kept")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range s.LayerDirs(img) {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("a used layer was collected: %v", err)
		}
	}
}

// TestRemoveDuringPut: a removal that collects unreferenced blobs while
// another Put has written, but not yet recorded, its manifest and config
// must leave that Put's image whole.
func TestRemoveDuringPut(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	base := randomImage(t, 2)
	if _, err := s.Put(ctx, base, image.PutOptions{Names: []string{"base"}}); err != nil {
		t.Fatal(err)
	}
	// Same layers as base (already unpacked), a new config and manifest.
	cf, _ := base.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.Env = []string{"VARIANT=1"}
	variant, err := mutate.ConfigFile(base, cf)
	if err != nil {
		t.Fatal(err)
	}
	// Put asks for the layers after it wrote the manifest and config:
	// hold it there while another image is put and removed.
	paused := &pausedImage{Image: variant, reached: make(chan struct{}), resume: make(chan struct{})}
	done := make(chan error)
	go func() {
		_, err := s.Put(ctx, paused, image.PutOptions{Names: []string{"variant"}})
		done <- err
	}()
	<-paused.reached
	if _, err := s.Put(ctx, randomImage(t, 1), image.PutOptions{Names: []string{"victim"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Remove("victim", image.RemoveOptions{}); err != nil {
		t.Fatal(err)
	}
	close(paused.resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	img, err := s.Get("variant")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{img.ID, img.Manifest} {
		if _, err := s.Content().Info(d); err != nil {
			t.Errorf("image %s lost blob %s: %v", img.ID, d, err)
		}
	}
}

type pausedImage struct {
	v1.Image
	reached, resume chan struct{}
}

func (p *pausedImage) Layers() ([]v1.Layer, error) {
	close(p.reached)
	<-p.resume
	return p.Image.Layers()
}
