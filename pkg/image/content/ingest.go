package content

import (
	"errors"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// ErrDigestMismatch marks content that is not what its digest promised.
var ErrDigestMismatch = errors.New("content does not match its digest")

// Ingest is a blob being written: Write it, then Commit or Abort.
type Ingest struct {
	s       *Store
	f       *os.File
	dg      digest.Digester
	size    int64
	flushed int64 // bytes whose writeback was started
	done    bool
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
	if w.size-w.flushed >= writebackChunk {
		// Start writeback of what is written so far, so that Commit's
		// fsync has little left to wait for.
		_ = unix.SyncFileRange(int(w.f.Fd()), w.flushed, w.size-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
		w.flushed = w.size
	}
	return n, err
}

// writebackChunk is how much an ingest writes between writeback starts.
const writebackChunk = 8 << 20

// Digest is the digest of what was written so far.
func (w *Ingest) Digest() digest.Digest { return w.dg.Digest() }

// Size is the number of bytes written so far.
func (w *Ingest) Size() int64 { return w.size }

// Commit checks the content against want (and size, if >= 0), makes it
// durable and moves it into place. The ingest is finished either way.
func (w *Ingest) Commit(want digest.Digest, size int64) error {
	defer w.Abort()
	if got := w.dg.Digest(); got != want {
		return fmt.Errorf("blob %s: got %s: %w", want, got, ErrDigestMismatch)
	}
	if size >= 0 && size != w.size {
		return fmt.Errorf("blob %s: %d bytes, want %d: %w", want, w.size, size, errdefs.ErrInvalidArgument)
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	if err := w.f.Chmod(0o444); err != nil {
		return err
	}
	if err := os.Rename(w.f.Name(), w.s.Path(want)); err != nil {
		return err
	}
	w.done = true
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
