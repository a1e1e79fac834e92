package runtime

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// The container init is this binary, re-executed. Were it executed from its
// path, a process in the container could open /proc/<init pid>/exe and, once
// the host binary is no longer busy, write to it: CVE-2019-5736. So init runs
// from a memfd copy sealed against writes, made once per process (a daemon
// pays the copy once; the command line pays it per create, about a
// millisecond for our binary).
var sealed struct {
	once sync.Once
	f    *os.File
	err  error
}

func sealedExe() (string, error) {
	sealed.once.Do(func() { sealed.f, sealed.err = sealSelf() })
	if sealed.err != nil {
		return "", fmt.Errorf("seal berthd binary for re-exec: %w", sealed.err)
	}
	return "/proc/self/fd/" + itoa(int(sealed.f.Fd())), nil
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
