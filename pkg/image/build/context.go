package build

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/berth-containers/berth/pkg/image/unpack"
)

// buildContext is the build's context, unpacked into a private directory.
type buildContext struct {
	dir  string
	root *os.Root
}

// openContext unpacks the context tar stream (plain, gzip or zstd) into
// dir, refusing entries that would land outside it.
func openContext(r io.Reader, dir string) (*buildContext, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if _, err := unpack.Unpack(r, dir, unpack.Options{Apply: true}); err != nil {
		return nil, invalid(fmt.Errorf("read the build context: %w", err))
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &buildContext{dir: dir, root: root}, nil
}

func (bc *buildContext) Close() error { return bc.root.Close() }

// applyIgnore removes the files .dockerignore excludes: a client may have
// sent them anyway. As Docker, the Dockerfile is read before, so that an
// ignored Dockerfile (the docker CLI ignores one it adds from outside the
// context) builds but cannot be copied.
func (bc *buildContext) applyIgnore() error {
	f, err := bc.root.Open(".dockerignore")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		return invalid(fmt.Errorf("read .dockerignore: %w", err))
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return invalid(fmt.Errorf(".dockerignore: %w", err))
	}
	var remove, matchedDirs []string
	err = fs.WalkDir(bc.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		match, err := pm.MatchesOrParentMatches(p)
		if err != nil {
			return err
		}
		if !match {
			return nil
		}
		if d.IsDir() && pm.Exclusions() {
			// Something under it may be let in again: look inside, and
			// drop the directory later if nothing was.
			matchedDirs = append(matchedDirs, p)
			return nil
		}
		remove = append(remove, p)
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply .dockerignore: %w", err)
	}
	for _, p := range remove {
		if err := bc.root.RemoveAll(p); err != nil {
			return err
		}
	}
	for i := len(matchedDirs) - 1; i >= 0; i-- { // deepest first
		_ = bc.root.Remove(matchedDirs[i]) // fails, as it should, when not empty
	}
	return nil
}

// source is one resolved COPY or ADD source: a path relative to root.
type source struct {
	root *os.Root
	rel  string
	info fs.FileInfo // of what rel leads to, symlinks followed inside root
}

// resolveSources expands COPY's source arguments in root: wildcards, and
// symlinks followed only inside root. In the context, a path that climbs
// out of it is refused; in an image (COPY --from), "/" is its root and
// ".." cannot go above it, as in Docker.
func resolveSources(root *os.Root, srcs []string, inContext bool) (out []source, wildcard bool, err error) {
	for _, src := range srcs {
		rel := filepath.ToSlash(src)
		if inContext && !path.IsAbs(rel) {
			if c := path.Clean(rel); c == ".." || strings.HasPrefix(c, "../") {
				return nil, false, invalid(fmt.Errorf("forbidden path outside the build context: %s", src))
			}
		}
		rel = strings.TrimPrefix(path.Clean("/"+rel), "/")
		if rel == "" {
			rel = "."
		}
		if strings.ContainsAny(rel, "*?[") {
			wildcard = true
			matches, err := glob(root, rel)
			if err != nil {
				return nil, false, err
			}
			out = append(out, matches...)
			continue
		}
		fi, err := root.Stat(rel)
		if err != nil {
			return nil, false, sourceError(src, inContext, err)
		}
		out = append(out, source{root: root, rel: rel, info: fi})
	}
	if len(out) == 0 {
		return nil, false, invalid(errors.New("no source files were specified"))
	}
	return out, wildcard, nil
}

func sourceError(src string, inContext bool, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist) && inContext:
		return invalid(fmt.Errorf("file not found in build context or excluded by .dockerignore: stat %s: file does not exist", src))
	case errors.Is(err, fs.ErrNotExist):
		return invalid(fmt.Errorf("stat %s: file does not exist", src))
	case strings.Contains(err.Error(), "escapes"):
		where := "the image"
		if inContext {
			where = "the build context"
		}
		return invalid(fmt.Errorf("%s: a symbolic link on the way leads outside %s: refused", src, where))
	}
	return err
}

// glob matches pattern (path.Match syntax, relative) against root's
// tree, below the pattern's fixed leading directories.
func glob(root *os.Root, pattern string) ([]source, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, invalid(fmt.Errorf("bad pattern %q: %w", pattern, err))
	}
	start := "."
	parts := strings.Split(pattern, "/")
	for i, p := range parts {
		if strings.ContainsAny(p, "*?[") {
			if i > 0 {
				start = strings.Join(parts[:i], "/")
			}
			break
		}
	}
	depth := len(parts)
	var out []source
	err := fs.WalkDir(root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == start {
				return fs.SkipAll
			}
			return err
		}
		if p == "." {
			return nil
		}
		if ok, _ := path.Match(pattern, p); ok {
			fi, err := root.Stat(p)
			if err != nil {
				return sourceError(p, true, err)
			}
			out = append(out, source{root: root, rel: p, info: fi})
		}
		if d.IsDir() && strings.Count(p, "/")+1 >= depth {
			return fs.SkipDir
		}
		return nil
	})
	return out, err
}
