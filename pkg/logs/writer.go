package logs

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Entry is one log record.
type Entry struct {
	Log    string    `json:"log"`    // the line, with its "\n" unless the line was split
	Stream string    `json:"stream"` // stdout or stderr
	Time   time.Time `json:"time"`
}

// maxLine is where a long line is split into several entries, as Docker
// does (16 KiB).
const maxLine = 16 << 10

// Writer appends entries to a log file, rotating it by size.
type Writer struct {
	path     string
	maxSize  int64 // 0: never rotate
	maxFiles int   // files kept, the current one included

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens (creating or appending to) the log at path. With maxSize > 0,
// a write that would take the file over maxSize first rotates it; maxFiles
// (at least 1) files are kept.
func Open(path string, maxSize int64, maxFiles int) (*Writer, error) {
	if maxFiles < 1 {
		maxFiles = 1
	}
	w := &Writer{path: path, maxSize: maxSize, maxFiles: maxFiles}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// Write appends one entry.
func (w *Writer) Write(e Entry) error {
	b, err := json.Marshal(struct {
		Log    string `json:"log"`
		Stream string `json:"stream"`
		Time   string `json:"time"`
	}{e.Log, e.Stream, e.Time.UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return err
	}
	b = append(b, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.maxSize > 0 && w.size > 0 && w.size+int64(len(b)) > w.maxSize {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	return err
}

// rotate shifts NAME.i to NAME.i+1 (dropping the oldest) and starts an
// empty NAME.
func (w *Writer) rotate() error {
	if err := w.f.Close(); err != nil {
		return err
	}
	if w.maxFiles == 1 {
		if err := os.Truncate(w.path, 0); err != nil {
			return err
		}
		return w.open()
	}
	for i := w.maxFiles - 1; i >= 1; i-- {
		from := rotated(w.path, i-1)
		if err := os.Rename(from, rotated(w.path, i)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log: %w", err)
		}
	}
	return w.open()
}

// rotated is the name of the i-th rotated file; 0 is the current one.
func rotated(path string, i int) string {
	if i == 0 {
		return path
	}
	return fmt.Sprintf("%s.%d", path, i)
}

// Copy writes what r produces as entries of stream, a line each (split
// at 16 KiB), until r ends.
func (w *Writer) Copy(stream string, r io.Reader) error {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if werr := w.Write(Entry{Log: string(line), Stream: stream, Time: time.Now()}); werr != nil {
				return werr
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

// Close closes the current file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.f.Close()
}
