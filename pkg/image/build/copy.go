package build

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"

	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/snapshot"
	"github.com/berth-containers/berth/pkg/image/unpack"
)

// copyRequest is a COPY or ADD, its words expanded.
type copyRequest struct {
	srcs           []string
	dest           string
	from           string
	chown, chmod   string
	add            bool
	sourceContents int  // heredocs
	flags          bool // BuildKit-only flags used
}

// copy runs COPY or ADD: sources from the context, or from an earlier
// stage or an image (--from), written into the stage's snapshot.
func (bs *buildState) copy(st *stage, cmd instructions.Command, req copyRequest) error {
	if req.flags {
		return errors.New("--link, --exclude, --parents, --checksum, --keep-git-dir and --unpack are not supported by this builder")
	}
	if req.sourceContents > 0 {
		return errors.New("heredocs are not supported by this builder")
	}
	for _, s := range req.srcs {
		if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "git@") {
			if req.add {
				return invalid(fmt.Errorf("%s: downloading from a URL is not supported: builds have no network access (copy the file into the context instead)", s))
			}
			return invalid(fmt.Errorf("source can't be a URL for COPY: %s", s))
		}
	}
	mode := fs.FileMode(0)
	if req.chmod != "" {
		m, err := strconv.ParseUint(req.chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return invalid(fmt.Errorf("invalid --chmod=%s: an octal mode such as 0755 is expected", req.chmod))
		}
		mode = fs.FileMode(m&0o777) | specialBits(uint32(m))
	}
	srcRoot, inContext, extra := bs.bc.root, true, ""
	if req.from != "" {
		var img *image.Image
		if prev := bs.stageNamed(req.from); prev != nil {
			img = prev.img
		} else {
			var err error
			if img, err = bs.image(req.from); err != nil {
				return err
			}
		}
		if img == nil {
			return invalid(fmt.Errorf("--from=%s: that stage made no image", req.from))
		}
		dir, err := os.MkdirTemp(bs.work, "from-")
		if err != nil {
			return err
		}
		defer snapshot.Remove(bs.b.Snapshot, dir) // on error paths; the build dir goes too
		rootfs, err := bs.b.Snapshot.Mount(bs.b.Store.LayerDirs(img), dir)
		if err != nil {
			return err
		}
		if srcRoot, err = os.OpenRoot(rootfs); err != nil {
			return err
		}
		defer srcRoot.Close()
		// The image's ID names its whole content: no need to read it.
		inContext, extra = false, "from "+img.ID.String()
	}
	sources, _, err := resolveSources(srcRoot, req.srcs, inContext)
	if err != nil {
		return err
	}
	if inContext {
		if extra, err = hashSources(sources); err != nil {
			return err
		}
	}
	if len(sources) > 1 && !dirLike(req.dest) {
		//lint:ignore ST1005 Docker's words, which clients match
		return invalid(fmt.Errorf("When using %s with more than one source file, the destination must be a directory and end with a /", strings.ToUpper(cmd.Name())))
	}
	relDest := strings.TrimPrefix(st.inWorkdir(req.dest), "/")
	if relDest == "" {
		relDest = "."
	}
	cfg := st.cfg.DeepCopy()
	return bs.commit(st, bs.cacheKey(st, cmd, extra), cfg, cmdString(cmd), func(rootfs string) error {
		dst, err := os.OpenRoot(rootfs)
		if err != nil {
			return err
		}
		defer dst.Close()
		// As Docker: what comes from the context belongs to root, what
		// comes from an image keeps its owner, unless --chown says.
		c := &copier{dst: dst, mode: mode, keepOwner: !inContext}
		if req.chown != "" {
			c.keepOwner = false
			u, err := image.ResolveUser(rootfs, req.chown)
			if err != nil {
				return invalid(fmt.Errorf("--chown=%s: %w", req.chown, err))
			}
			c.uid, c.gid = int(u.UID), int(u.GID)
		}
		isDir := dirLike(req.dest) || len(sources) > 1
		if fi, err := dst.Stat(relDest); err == nil && fi.IsDir() {
			isDir = true
		}
		for _, src := range sources {
			switch {
			case src.info.IsDir():
				if err := c.mkdirAll(relDest); err != nil {
					return err
				}
				if err := c.copyTree(src.root, src.rel, relDest); err != nil {
					return err
				}
			case req.add && inContext && isArchive(src):
				if err := c.mkdirAll(relDest); err != nil {
					return err
				}
				if err := c.extract(src, relDest); err != nil {
					return err
				}
			default:
				target := relDest
				if isDir {
					target = path.Join(relDest, path.Base(src.rel))
				}
				if err := c.mkdirAll(path.Dir(target)); err != nil {
					return err
				}
				if err := c.copyEntry(src.root, src.rel, target, src.info); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func dirLike(dest string) bool {
	return strings.HasSuffix(dest, "/") || dest == "." || strings.HasSuffix(dest, "/.")
}

func specialBits(m uint32) fs.FileMode {
	var out fs.FileMode
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

// hashSources digests what COPY reads: every name, type, mode, link
// target and content under the sources; not times or owners, which COPY
// does not keep.
func hashSources(sources []source) (string, error) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for _, src := range sources {
		fmt.Fprintf(h, "source %q\n", src.rel)
		if !src.info.IsDir() {
			if err := hashEntry(h, src.root, src.rel, ".", src.info, buf); err != nil {
				return "", err
			}
			continue
		}
		err := fs.WalkDir(src.root.FS(), src.rel, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return hashEntry(h, src.root, p, relTo(src.rel, p), fi, buf)
		})
		if err != nil {
			return "", fmt.Errorf("read %s: %w", src.rel, err)
		}
	}
	return "files " + hex.EncodeToString(h.Sum(nil)), nil
}

func hashEntry(h io.Writer, root *os.Root, p, name string, fi fs.FileInfo, buf []byte) error {
	fmt.Fprintf(h, "%q %o", name, uint32(fi.Mode()))
	switch {
	case fi.Mode().IsRegular():
		f, err := root.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.CopyBuffer(h, f, buf)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, " %d\n", n)
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := root.Readlink(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, " -> %q\n", target)
	default:
		fmt.Fprintln(h)
	}
	return nil
}

// relTo is p relative to base, both slash paths inside one root.
func relTo(base, p string) string {
	if base == "." {
		return p
	}
	if p == base {
		return "."
	}
	return strings.TrimPrefix(p, base+"/")
}

// isArchive reports whether a source is a tar archive (plain, gzip or
// zstd), which ADD extracts.
func isArchive(src source) bool {
	if !src.info.Mode().IsRegular() {
		return false
	}
	f, err := src.root.Open(src.rel)
	if err != nil {
		return false
	}
	defer f.Close()
	plain, _, err := unpack.Decompress(f)
	if err != nil {
		return false
	}
	defer plain.Close()
	_, err = tar.NewReader(plain).Next()
	return err == nil
}

// copier writes into a root filesystem, every path resolved inside it:
// a symlink in the image cannot send a write to the host.
type copier struct {
	dst       *os.Root
	uid, gid  int
	keepOwner bool        // the source's owner rather than uid and gid
	mode      fs.FileMode // --chmod; 0 keeps the source's
}

// owner is who owns a copy of fi.
func (c *copier) owner(fi fs.FileInfo) (int, int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && c.keepOwner {
		return int(st.Uid), int(st.Gid)
	}
	return c.uid, c.gid
}

// mkdirAll makes rel and its missing parents, owned as COPY's files.
func (c *copier) mkdirAll(rel string) error {
	if rel == "." || rel == "" {
		return nil
	}
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fi, err := c.dst.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("cannot copy into /%s: /%s is not a directory", rel, p)
			}
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := c.dst.Mkdir(p, 0o755); err != nil {
			return err
		}
		if err := c.dst.Lchown(p, c.uid, c.gid); err != nil {
			return err
		}
	}
	return nil
}

// copyTree copies the contents of directory srcRel into dstRel.
func (c *copier) copyTree(src *os.Root, srcRel, dstRel string) error {
	return fs.WalkDir(src.FS(), srcRel, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == srcRel {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return c.copyEntry(src, p, path.Join(dstRel, relTo(srcRel, p)), fi)
	})
}

// copyEntry copies one file, directory or symlink (not followed) to
// target, owned by the copier's user, with its mode and time.
func (c *copier) copyEntry(src *os.Root, p, target string, fi fs.FileInfo) error {
	mode := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if c.mode != 0 {
		mode = c.mode
	}
	existing, err := c.dst.Lstat(target)
	switch {
	case err == nil && existing.IsDir() && fi.IsDir():
		return nil // merged into, as it is
	case err == nil && existing.IsDir():
		return fmt.Errorf("cannot replace directory /%s with a file", target)
	case err == nil:
		if err := c.dst.Remove(target); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	switch {
	case fi.IsDir():
		if err := c.dst.Mkdir(target, 0o700); err != nil {
			return err
		}
	case fi.Mode().IsRegular():
		if err := c.writeFile(src, p, target); err != nil {
			return err
		}
	case fi.Mode()&fs.ModeSymlink != 0:
		link, err := src.Readlink(p)
		if err != nil {
			return err
		}
		if err := c.dst.Symlink(link, target); err != nil {
			return err
		}
		uid, gid := c.owner(fi)
		return c.dst.Lchown(target, uid, gid)
	default:
		return nil // devices, fifos and sockets are not copied
	}
	uid, gid := c.owner(fi)
	if err := c.dst.Lchown(target, uid, gid); err != nil {
		return err
	}
	if err := c.dst.Chmod(target, mode); err != nil {
		return err
	}
	return c.dst.Chtimes(target, fi.ModTime(), fi.ModTime())
}

func (c *copier) writeFile(src *os.Root, p, target string) error {
	in, err := src.Open(p)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := c.dst.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// extract unpacks an archive source into dstRel, as ADD does.
func (c *copier) extract(src source, dstRel string) error {
	f, err := src.root.Open(src.rel)
	if err != nil {
		return err
	}
	defer f.Close()
	d, err := c.dst.Open(dstRel)
	if err != nil {
		return err
	}
	defer d.Close()
	// The directory was opened inside the root: unpack through its fd.
	if _, err := unpack.Unpack(f, fmt.Sprintf("/proc/self/fd/%d", d.Fd()), unpack.Options{Apply: true}); err != nil {
		return fmt.Errorf("extract %s: %w", src.rel, err)
	}
	return nil
}
