package content_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"

	"github.com/berth-containers/berth/pkg/image/content"
)

func TestWriteVerifiesAndLeavesNothingOnMismatch(t *testing.T) {
	root := t.TempDir()
	s, err := content.New(root)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("hello blob")
	d := digest.FromBytes(data)
	if err := s.Write(bytes.NewReader([]byte("tampered!!")), d, int64(len(data))); !errors.Is(err, content.ErrDigestMismatch) {
		t.Errorf("tampered content: %v, want ErrDigestMismatch", err)
	}
	if err := s.Write(bytes.NewReader(data), d, 3); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("wrong size: %v, want ErrInvalidArgument", err)
	}
	if _, err := s.Info(d); !errdefs.IsNotFound(err) {
		t.Errorf("after failed writes: Info = %v, want not found", err)
	}
	if left, _ := os.ReadDir(filepath.Join(root, "tmp")); len(left) != 0 {
		t.Errorf("tmp/ holds %d files after failed writes", len(left))
	}
	if err := s.Write(bytes.NewReader(data), d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if b, err := s.ReadAll(d); err != nil || !bytes.Equal(b, data) {
		t.Errorf("ReadAll = %q, %v", b, err)
	}
	if fi, _ := os.Stat(s.Path(d)); fi.Mode().Perm() != 0o444 {
		t.Errorf("blob mode %v, want read-only", fi.Mode())
	}
	list, _ := s.List()
	if len(list) != 1 || list[0] != d {
		t.Errorf("List = %v", list)
	}
}

// TestNewRemovesUnfinishedIngests: what a killed writer left in tmp/ is
// gone at the next open, and never visible as a blob.
func TestNewRemovesUnfinishedIngests(t *testing.T) {
	root := t.TempDir()
	s, _ := content.New(root)
	w, err := s.NewIngest()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("half a blo"))
	// no Commit, no Abort: as if killed
	if list, _ := s.List(); len(list) != 0 {
		t.Fatalf("unfinished ingest listed: %v", list)
	}
	if _, err := content.New(root); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(root, "tmp")); len(left) != 0 {
		t.Errorf("tmp/ holds %d files after reopen", len(left))
	}
}
