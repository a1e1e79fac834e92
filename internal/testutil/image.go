package testutil

import (
	"testing"

	"github.com/berth-containers/berth/pkg/image"
)

// ImageStore opens an image store (with its metadata database) under root,
// a new temp dir when root is "", and closes it at cleanup.
func ImageStore(t testing.TB, root string) *image.Store {
	t.Helper()
	RequiresRoot(t)
	if root == "" {
		root = t.TempDir()
	}
	db, err := image.OpenDB(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := image.New(root, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() }) // before the database closes: cleanups run last first
	return s
}
