package content

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
)

// Store is a content-addressed blob store under a root directory.
type Store struct {
	blobs string // <root>/blobs/sha256
	tmp   string // <root>/tmp, on the same filesystem for renames
}

// New opens (making it if needed) the store under root and removes
// unfinished ingests left by an earlier crash.
func New(root string) (*Store, error) {
	s := &Store{blobs: filepath.Join(root, "blobs", "sha256"), tmp: filepath.Join(root, "tmp")}
	for _, d := range []string{s.blobs, s.tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("content store: %w", err)
		}
	}
	stale, _ := filepath.Glob(filepath.Join(s.tmp, "ingest-*"))
	for _, p := range stale {
		_ = os.Remove(p)
	}
	return s, nil
}

// Path is where the blob d lives (whether or not it exists).
func (s *Store) Path(d digest.Digest) string { return filepath.Join(s.blobs, d.Encoded()) }

// Info returns the size of blob d, or an errdefs.ErrNotFound error.
func (s *Store) Info(d digest.Digest) (int64, error) {
	if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
		return 0, fmt.Errorf("blob %q: %w", d, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(s.Path(d))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Open opens blob d for reading.
func (s *Store) Open(d digest.Digest) (*os.File, error) {
	if _, err := s.Info(d); err != nil {
		return nil, err
	}
	return os.Open(s.Path(d))
}

// ReadAll returns the content of a small blob (a manifest or config).
func (s *Store) ReadAll(d digest.Digest) ([]byte, error) {
	f, err := s.Open(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<20))
	if err != nil {
		return nil, err
	}
	if digest.FromBytes(b) != d {
		return nil, fmt.Errorf("blob %s: content does not match its digest", d)
	}
	return b, nil
}

// Delete removes blob d; a missing blob is no error.
func (s *Store) Delete(d digest.Digest) error {
	if err := os.Remove(s.Path(d)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// List returns the digests of all blobs.
func (s *Store) List() ([]digest.Digest, error) {
	entries, err := os.ReadDir(s.blobs)
	if err != nil {
		return nil, err
	}
	var out []digest.Digest
	for _, e := range entries {
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if d.Validate() == nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// Write stores the blob read from r, which must have digest want and, if
// size >= 0, that many bytes.
func (s *Store) Write(r io.Reader, want digest.Digest, size int64) error {
	if _, err := s.Info(want); err == nil {
		return nil
	}
	w, err := s.NewIngest()
	if err != nil {
		return err
	}
	defer w.Abort()
	if _, err := io.Copy(w, r); err != nil {
		return fmt.Errorf("write blob %s: %w", want, err)
	}
	return w.Commit(want, size)
}

// WriteBytes stores b and returns its digest.
func (s *Store) WriteBytes(b []byte) (digest.Digest, error) {
	d := digest.FromBytes(b)
	return d, s.Write(bytes.NewReader(b), d, int64(len(b)))
}
