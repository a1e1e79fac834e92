package snapshot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/image/diff"
	"github.com/berth-containers/berth/pkg/image/unpack"
)

// Driver makes root filesystems from layer directories.
type Driver interface {
	// Name is "overlay" or "copy".
	Name() string
	// Mount makes dir/rootfs the union of layers (lowest first) under a
	// writable layer of its own, and returns dir/rootfs. Mounting what is
	// mounted already returns it as it is.
	Mount(layers []string, dir string) (string, error)
	// Unmount releases dir/rootfs; the writable layer stays until dir is
	// removed. Unmounting what is not mounted is no error.
	Unmount(dir string) error
}

// Default is the overlay driver where the kernel has overlayfs, else copy.
func Default() Driver {
	if OverlaySupported() {
		return Overlay{}
	}
	return Copy{}
}

var overlayOnce = sync.OnceValue(func() bool {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
})

// OverlaySupported reports whether overlayfs can be mounted here.
func OverlaySupported() bool { return overlayOnce() }

// Remove unmounts and deletes a snapshot directory.
func Remove(d Driver, dir string) error {
	if err := d.Unmount(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

func rootfsOf(dir string) string { return filepath.Join(dir, "rootfs") }

// Overlay mounts overlayfs.
type Overlay struct{}

func (Overlay) Name() string { return "overlay" }

func (Overlay) Mount(layers []string, dir string) (string, error) {
	upper, work, rootfs := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), rootfsOf(dir)
	if mounted(dir, rootfs) {
		return rootfs, nil
	}
	for _, d := range []string{upper, work, rootfs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	if len(layers) == 0 {
		// overlayfs needs a lower layer; an image without layers has an empty one.
		empty := filepath.Join(dir, "empty")
		if err := os.MkdirAll(empty, 0o755); err != nil {
			return "", err
		}
		layers = []string{empty}
	}
	if err := mountOverlay(layers, upper, work, rootfs); err != nil {
		return "", fmt.Errorf("mount overlay at %s: %w", rootfs, err)
	}
	return rootfs, nil
}

// mountOverlay uses the new mount API, adding lower layers one by one
// ("lowerdir+", Linux 6.8): mount(2)'s single option string is limited to
// a page, which an image with many layers under a long root exceeds.
func mountOverlay(layers []string, upper, work, target string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// overlayfs lists lower layers top first.
	for i := len(layers) - 1; i >= 0; i-- {
		if err := unix.FsconfigSetString(fd, "lowerdir+", layers[i]); err != nil {
			if errors.Is(err, unix.EINVAL) && i == len(layers)-1 {
				return mountOverlayLegacy(layers, upper, work, target)
			}
			return fmt.Errorf("lower layer %s: %w", layers[i], err)
		}
	}
	for k, v := range map[string]string{"upperdir": upper, "workdir": work} {
		if err := unix.FsconfigSetString(fd, k, v); err != nil {
			return fmt.Errorf("%s %s: %w", k, v, err)
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return err
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	return unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
}

// mounted reports whether a filesystem other than dir's is mounted at rootfs.
func mounted(dir, rootfs string) bool {
	var a, b unix.Stat_t
	if unix.Stat(dir, &a) != nil || unix.Stat(rootfs, &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

func mountOverlayLegacy(layers []string, upper, work, target string) error {
	lower := ""
	for i := len(layers) - 1; i >= 0; i-- {
		if lower != "" {
			lower += ":"
		}
		lower += layers[i]
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	return unix.Mount("overlay", target, "overlay", 0, opts)
}

func (Overlay) Unmount(dir string) error {
	err := unix.Unmount(rootfsOf(dir), unix.MNT_DETACH)
	if err == nil || err == unix.EINVAL || err == unix.ENOENT {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", rootfsOf(dir), err)
}

// Copy applies the layers onto a plain directory.
type Copy struct{}

func (Copy) Name() string { return "copy" }

func (Copy) Mount(layers []string, dir string) (string, error) {
	rootfs := rootfsOf(dir)
	if _, err := os.Stat(filepath.Join(dir, "copied")); err == nil {
		return rootfs, nil // made before: it is the container's writable layer
	}
	if err := os.RemoveAll(rootfs); err != nil {
		return "", err
	}
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return "", err
	}
	for _, l := range layers {
		if err := applyLayer(l, rootfs); err != nil {
			return "", fmt.Errorf("copy layer %s: %w", l, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "copied"), nil, 0o600); err != nil {
		return "", err
	}
	return rootfs, nil
}

// applyLayer streams the layer directory as a tar through the unpacker in
// Apply mode, which refuses any path through a symlink of a lower layer.
func applyLayer(layer, rootfs string) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(diff.Write(pw, layer)) }()
	_, err := unpack.Unpack(pr, rootfs, unpack.Options{Apply: true})
	pr.CloseWithError(err)
	return err
}

func (Copy) Unmount(string) error { return nil }
