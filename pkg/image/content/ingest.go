package content

import (
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
)

// ErrDigestMismatch marks content that is not what its digest promised.
var ErrDigestMismatch = errors.New("content does not match its digest")

// Ingest is a blob being written: Write it, then Commit or Abort.
type Ingest struct {
	s    *Store
	f    *os.File
	dg   digest.Digester
	size int64
	done bool
}

// NewIngest starts writing a blob whose digest is known only at Commit.
func (s *Store) NewIngest() (*Ingest, error) {
	f, err := os.CreateTemp(s.tmp, "ingest-")
	if err != nil {
		return nil, fmt.Errorf("content store: %w", err)
	}
	return &Ingest{s: s, f: f, dg: digest.SHA256.Digester()}, nil
}

func (w *Ingest) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.dg.Hash().Write(p[:n])
	w.size += int64(n)
	return n, err
}

// Digest is the digest of what was written so far.
func (w *Ingest) Digest() digest.Digest { return w.dg.Digest() }

// Size is the number of bytes written so far.
func (w *Ingest) Size() int64 { return w.size }

// Commit checks the content against want (and size, if >= 0), makes it
// durable and moves it into place. The ingest is finished either way.
func (w *Ingest) Commit(want digest.Digest, size int64) error {
	return w.commit(want, size, true)
}

// CommitUnsynced is Commit without waiting for the disk: the caller makes
// the blob durable later (a syncfs of the store's filesystem) and knows
// what to drop if the machine crashes first.
func (w *Ingest) CommitUnsynced(want digest.Digest, size int64) error {
	return w.commit(want, size, false)
}

func (w *Ingest) commit(want digest.Digest, size int64, durable bool) error {
	defer w.Abort()
	if got := w.dg.Digest(); got != want {
		return fmt.Errorf("blob %s: got %s: %w", want, got, ErrDigestMismatch)
	}
	if size >= 0 && size != w.size {
		return fmt.Errorf("blob %s: %d bytes, want %d: %w", want, w.size, size, errdefs.ErrInvalidArgument)
	}
	if durable {
		if err := w.f.Sync(); err != nil {
			return err
		}
	}
	if err := w.f.Chmod(0o444); err != nil {
		return err
	}
	if err := os.Rename(w.f.Name(), w.s.Path(want)); err != nil {
		return err
	}
	w.done = true
	if !durable {
		return nil
	}
	return syncDir(w.s.blobs)
}

// Abort drops an unfinished ingest; after Commit it does nothing.
func (w *Ingest) Abort() {
	w.f.Close()
	if !w.done {
		os.Remove(w.f.Name())
		w.done = true
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
