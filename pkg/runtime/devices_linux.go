package runtime

import (
	"fmt"
	"os"
	"path"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func charDev(p string, major, minor int64) specs.LinuxDevice {
	mode := os.FileMode(0o666)
	return specs.LinuxDevice{Path: p, Type: "c", Major: major, Minor: minor, FileMode: &mode}
}

// defaultDevices are created in every container, as runc and Docker do.
var defaultDevices = []specs.LinuxDevice{
	charDev("/dev/null", 1, 3), charDev("/dev/zero", 1, 5), charDev("/dev/full", 1, 7),
	charDev("/dev/random", 1, 8), charDev("/dev/urandom", 1, 9), charDev("/dev/tty", 5, 0),
}

// devices lists default and spec devices; a spec device replaces a default one of the same path.
func devices(spec *specs.Spec) []specs.LinuxDevice {
	byPath := map[string]bool{}
	for _, d := range spec.Linux.Devices {
		byPath[path.Clean(d.Path)] = true
	}
	var out []specs.LinuxDevice
	for _, d := range defaultDevices {
		if !byPath[d.Path] {
			out = append(out, d)
		}
	}
	return append(out, spec.Linux.Devices...)
}

// devIsHostBind reports whether the spec binds a host directory on /dev, in
// which case the runtime creates no nodes there.
func devIsHostBind(spec *specs.Spec) bool {
	for _, m := range spec.Mounts {
		if path.Clean(m.Destination) == "/dev" && isBind(m) {
			return true
		}
	}
	return false
}

// prepareDeviceBinds clones the host's device nodes for a user namespace,
// where mknod is not allowed.
func prepareDeviceBinds(spec *specs.Spec) ([]pendingMount, error) {
	if !hasNamespace(spec, specs.UserNamespace) || devIsHostBind(spec) {
		return nil, nil
	}
	var out []pendingMount
	for _, d := range devices(spec) {
		fd, _, err := cloneTree(d.Path, false)
		if err != nil {
			closePending(out)
			return nil, stage("device "+d.Path, err)
		}
		out = append(out, pendingMount{dest: path.Clean(d.Path), fd: fd, file: true})
	}
	return out, nil
}

func setupDevices(root int, spec *specs.Spec, binds []pendingMount) error {
	if !devIsHostBind(spec) {
		for _, b := range binds {
			if err := attachMount(root, b); err != nil {
				return err
			}
		}
		if len(binds) == 0 {
			for _, d := range devices(spec) {
				if err := mknodInRoot(root, d); err == unix.EPERM {
					return fmt.Errorf("create device %s: %w (linux.resources.devices must allow mknod, access \"m\")", d.Path, err)
				} else if err != nil {
					return stage("create device "+d.Path, err)
				}
			}
		}
	}
	return stage("create /dev symlinks", devSymlinks(root, spec))
}

func mknodInRoot(root int, d specs.LinuxDevice) error {
	dir, err := mkdirAllInRoot(root, path.Dir(d.Path))
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	mode := uint32(0o666)
	if d.FileMode != nil {
		mode = uint32(d.FileMode.Perm())
	}
	switch d.Type {
	case "c", "u":
		mode |= unix.S_IFCHR
	case "b":
		mode |= unix.S_IFBLK
	case "p":
		mode |= unix.S_IFIFO
	default:
		return unix.EINVAL
	}
	name := path.Base(d.Path)
	dev := int(unix.Mkdev(uint32(d.Major), uint32(d.Minor)))
	err = unix.Mknodat(dir, name, mode, dev)
	if err == unix.EEXIST {
		if err = unix.Unlinkat(dir, name, 0); err == nil {
			err = unix.Mknodat(dir, name, mode, dev)
		}
	}
	if err != nil {
		return err
	}
	uid, gid := -1, -1
	if d.UID != nil {
		uid = int(*d.UID)
	}
	if d.GID != nil {
		gid = int(*d.GID)
	}
	return unix.Fchownat(dir, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

func devSymlinks(root int, spec *specs.Spec) error {
	links := [][2]string{
		{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
	}
	if mountTypeAt(spec, "/proc") == "proc" {
		links = append(links, [2]string{"/proc/kcore", "core"})
	}
	dev, err := mkdirAllInRoot(root, "/dev")
	if err != nil {
		return err
	}
	defer unix.Close(dev)
	if mountTypeAt(spec, "/dev/pts") == "devpts" {
		_ = unix.Unlinkat(dev, "ptmx", 0)
		links = append(links, [2]string{"pts/ptmx", "ptmx"})
	}
	for _, l := range links {
		if err := unix.Symlinkat(l[0], dev, l[1]); err != nil && err != unix.EEXIST {
			return err
		}
	}
	return nil
}

func mountTypeAt(spec *specs.Spec, dest string) string {
	t := ""
	for _, m := range spec.Mounts {
		if path.Clean(m.Destination) == dest {
			t = m.Type
		}
	}
	return t
}
