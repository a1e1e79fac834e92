package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// The container init is this binary, re-executed. Were it executed from its
// path, a process in the container could open /proc/<init pid>/exe and, once
// the host binary is no longer busy, write to it: CVE-2019-5736. So init
// runs from a copy nobody can write, as runc 1.2's exeseal does:
//
//   - first choice: the binary seen through a detached, read-only overlayfs
//     mount of its directory (fsmount, attached nowhere): writes fail with
//     EROFS, and it costs a superblock, not a copy;
//   - fallback: a memfd copy sealed against writes (F_SEAL_WRITE), about
//     5 ms for our 9 MB binary.
//
// Either is made once per process: a daemon pays it once, the command line
// once per create.
var sealed struct {
	once sync.Once
	f    *os.File
	err  error
}

func sealedExe() (string, error) {
	sealed.once.Do(func() {
		if sealed.f, sealed.err = overlaySelf(); sealed.err != nil {
			sealed.f, sealed.err = sealSelf()
		}
	})
	if sealed.err != nil {
		return "", fmt.Errorf("seal berthd binary for re-exec: %w", sealed.err)
	}
	return "/proc/self/fd/" + itoa(int(sealed.f.Fd())), nil
}

// overlaySelf opens our binary through a read-only overlayfs of its
// directory. Overlayfs wants two lower layers when there is no upper one;
// the second is an empty tmpfs that is mounted nowhere (a directory of our
// own on disk could lie inside the binary's directory, /tmp say, and
// overlayfs refuses overlapping layers).
func overlaySelf() (*os.File, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return nil, err
	}
	empty, err := detachedMount("tmpfs", "mode=0555", "size=0")
	if err != nil {
		return nil, err
	}
	defer unix.Close(empty)
	lower := filepath.Dir(exe) + ":/proc/self/fd/" + itoa(empty)
	mnt, err := detachedMount("overlay", "lowerdir="+lower)
	if err != nil {
		return nil, err
	}
	defer unix.Close(mnt)
	fd, err := unix.Openat(mnt, filepath.Base(exe), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), exe), nil
}

// detachedMount makes a read-only mount of a new fstype instance, attached nowhere.
func detachedMount(fstype string, opts ...string) (int, error) {
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, err
	}
	defer unix.Close(fsfd)
	for _, o := range opts {
		if err := fsconfigOption(fsfd, o); err != nil {
			return -1, err
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, err
	}
	return unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOSUID)
}

// copyAll copies with sendfile(2): the kernel moves the page-cache pages
// into the memfd without a trip through user space.
func copyAll(dst, src *os.File) error {
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	for left := fi.Size(); left > 0; {
		n, err := unix.Sendfile(int(dst.Fd()), int(src.Fd()), nil, int(left))
		if err != nil {
			return fmt.Errorf("copy binary: %w", err)
		}
		if n == 0 {
			break
		}
		left -= int64(n)
	}
	return nil
}

func sealSelf() (*os.File, error) {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return nil, err
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("berthd", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if err == unix.EINVAL { // kernels before 6.3 know no MFD_EXEC
		fd, err = unix.MemfdCreate("berthd", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "berthd-sealed")
	if err := copyAll(f, src); err != nil {
		f.Close()
		return nil, err
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal memfd: %w", err)
	}
	return f, nil
}
