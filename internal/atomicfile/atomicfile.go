// Package atomicfile writes a file whole or not at all: into PATH.tmp,
// renamed over PATH once complete, removed on error.
package atomicfile

import (
	"io"
	"os"
)

// Write creates path with what fill writes.
func Write(path string, fill func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
