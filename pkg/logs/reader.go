package logs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"time"
)

// ReadOptions select entries, as docker logs does.
type ReadOptions struct {
	Tail   int       // the last Tail entries; < 0 all
	Since  time.Time // zero: from the start
	Until  time.Time // zero: no end
	Follow bool      // then wait for new entries until Done or the context ends
	// Done is closed when nothing more will be written (the container
	// exited); Follow then returns once it has read everything.
	Done <-chan struct{}
}

// pollInterval is how often a followed log is checked for new entries.
const pollInterval = 100 * time.Millisecond

// Read calls fn for the selected entries of the log at path and its
// rotated files, oldest first.
func Read(ctx context.Context, path string, opts ReadOptions, fn func(Entry) error) error {
	in := func(e Entry) bool {
		return (opts.Since.IsZero() || !e.Time.Before(opts.Since)) && (opts.Until.IsZero() || !e.Time.After(opts.Until))
	}
	var tail []Entry
	emit := fn
	if opts.Tail >= 0 {
		emit = func(e Entry) error {
			if opts.Tail == 0 {
				return nil
			}
			if len(tail) == opts.Tail {
				tail = tail[1:]
			}
			tail = append(tail, e)
			return nil
		}
	}
	for i := maxRotated(path); i >= 1; i-- {
		if err := readFile(rotated(path, i), in, emit); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { f.Close() }()
	if _, err := readFrom(f, in, emit); err != nil {
		return err
	}
	for _, e := range tail {
		if err := fn(e); err != nil {
			return err
		}
	}
	if !opts.Follow {
		return nil
	}
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		done := false
		select {
		case <-ctx.Done():
			return nil
		case <-opts.Done:
			done = true
		case <-ticker.C:
		}
		// A rotation replaced the file: finish the old one, go on with the
		// new. (Two rotations within one poll would skip the file between.)
		if cur, err := os.Stat(path); err == nil {
			if old, err := f.Stat(); err == nil && !os.SameFile(cur, old) {
				if _, err := readFrom(f, in, fn); err != nil {
					return err
				}
				f.Close()
				if f, err = os.Open(path); err != nil {
					return err
				}
			}
		}
		if _, err := readFrom(f, in, fn); err != nil {
			return err
		}
		if done || (!opts.Until.IsZero() && time.Now().After(opts.Until)) {
			return nil
		}
	}
}

// maxRotated is the highest NAME.i that exists.
func maxRotated(path string) int {
	i := 0
	for {
		if _, err := os.Stat(rotated(path, i+1)); err != nil {
			return i
		}
		i++
	}
}

func readFile(path string, in func(Entry) bool, fn func(Entry) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = readFrom(f, in, fn)
	return err
}

// readFrom reads complete lines from f's offset on and returns how many
// bytes it consumed; a line still being written is left for later.
func readFrom(f *os.File, in func(Entry) bool, fn func(Entry) error) (int64, error) {
	start, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	br := bufio.NewReader(f)
	var n int64
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			// Give back a partial line: rewind to its start.
			_, serr := f.Seek(start+n, io.SeekStart)
			return n, serr
		}
		if err != nil {
			return n, err
		}
		n += int64(len(line))
		var e Entry
		if json.Unmarshal(line, &e) != nil {
			continue // a damaged line is skipped, not fatal
		}
		if in(e) {
			if err := fn(e); err != nil {
				return n, err
			}
		}
	}
}
