package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The root filesystem is built in three steps, so that no mount destination
// can be resolved against the host:
//
//  1. prepare: every spec mount becomes a detached mount (open_tree for bind
//     sources, fsopen/fsmount for filesystems) while the host tree is still
//     reachable: bind sources are host paths, and the kernel lets a user
//     namespace mount proc and sysfs only while one is visible.
//  2. attach: each destination is resolved with openat2(RESOLVE_IN_ROOT |
//     RESOLVE_NO_MAGICLINKS) from a handle on the rootfs, so a symlink in
//     the image such as /etc -> /../../host ends inside the rootfs, and
//     /proc/self/fd magic links cannot point back out; the detached mount is
//     moved onto the resolved handle itself (move_mount), never onto a path.
//     Device nodes are made the same way. createContainer hooks run here,
//     where the host's paths still resolve, as OCI hooks expect.
//  3. pivot_root into the rootfs and detach the host's tree; masked and
//     read-only paths follow.

// pendingMount is a prepared, detached mount waiting for pivot_root.
type pendingMount struct {
	dest     string
	fd       int // mount tree from open_tree or fsmount
	file     bool
	opts     mountOpts
	children []pendingMount // cgroup v1 controllers under a tmpfs, dest relative
}

func setupRootfs(sock *os.File, cfg *initConfig) error {
	spec := cfg.Spec
	unix.Umask(0)
	prop, ok := propagationFlag(spec.Linux.RootfsPropagation)
	if !ok {
		return fmt.Errorf("rootfsPropagation %q: unknown", spec.Linux.RootfsPropagation)
	}
	if err := unix.Mount("", "/", "", prop, ""); err != nil {
		return stage("make / "+spec.Linux.RootfsPropagation+" private", err)
	}
	if err := unix.Mount(cfg.Rootfs, cfg.Rootfs, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return stage("bind rootfs "+cfg.Rootfs, err)
	}
	pending, err := prepareMounts(cfg)
	if err != nil {
		return err
	}
	devBinds, err := prepareDeviceBinds(spec)
	if err != nil {
		return err
	}
	// The rootfs bind made above; it becomes / at pivot_root, and every
	// path below is resolved in it, never against the host.
	root, err := unix.Open(cfg.Rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return stage("open rootfs "+cfg.Rootfs, err)
	}
	defer unix.Close(root)
	for _, pm := range pending {
		if err := attachMount(root, pm); err != nil {
			return err
		}
	}
	if err := setupDevices(root, spec, devBinds); err != nil {
		return err
	}
	if err := containerHooks(sock, cfg); err != nil {
		return err
	}
	if err := pivotRoot(cfg.Rootfs); err != nil {
		return stage("pivot_root to "+cfg.Rootfs, err)
	}
	return finishRootfs(root, spec)
}

// containerHooks runs the hooks due once the container's mounts are made
// and before pivot_root: the parent's (prestart, createRuntime), then
// createContainer here, in the container's namespaces.
func containerHooks(sock *os.File, cfg *initConfig) error {
	hooks := cfg.Spec.Hooks
	if hooks == nil {
		return nil
	}
	if parentHooks(hooks) {
		if err := writeMsg(sock, syncMsg{Type: msgHooks}); err != nil {
			return err
		}
		m, _, err := readMsg(sock)
		if err != nil {
			return stage("wait for the parent's hooks", err)
		}
		if m.Type != msgHooksDone {
			return fmt.Errorf("sync: got %q, want %s", m.Type, msgHooksDone)
		}
	}
	return runHooks("createContainer", hooks.CreateContainer, cfg.State)
}

// finishRootfs makes the cwd, masks and read-only paths, and the read-only
// root, once root is /.
func finishRootfs(root int, spec *specs.Spec) error {
	if cwd := spec.Process.Cwd; cwd != "" {
		fd, err := mkdirAllInRoot(root, cwd)
		if err != nil {
			return stage("create cwd "+cwd, err)
		}
		unix.Close(fd)
	}
	for _, p := range spec.Linux.MaskedPaths {
		if err := maskPath(root, p); err != nil {
			return stage("mask "+p, err)
		}
	}
	for _, p := range spec.Linux.ReadonlyPaths {
		if err := readonlyPath(root, p); err != nil {
			return stage("make "+p+" read-only", err)
		}
	}
	if spec.Root.Readonly {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(root, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			return stage("make root read-only", err)
		}
	}
	return stage("chdir /", unix.Chdir("/"))
}

func prepareMounts(cfg *initConfig) ([]pendingMount, error) {
	var out []pendingMount
	for _, m := range cfg.Spec.Mounts {
		pm, err := prepareMount(cfg, m)
		if err != nil {
			closePending(out)
			return nil, stage(fmt.Sprintf("mount %s (%s) on %s", m.Source, m.Type, m.Destination), err)
		}
		out = append(out, pm)
	}
	return out, nil
}

func closePending(pms []pendingMount) {
	for _, pm := range pms {
		unix.Close(pm.fd)
		closePending(pm.children)
	}
}

func prepareMount(cfg *initConfig, m specs.Mount) (pendingMount, error) {
	pm := pendingMount{dest: path.Clean(m.Destination), opts: parseMountOpts(m.Options)}
	var err error
	switch {
	case isBind(m):
		pm.fd, pm.file, err = cloneTree(m.Source, pm.opts.recursive)
	case m.Type == "sysfs" && !hasNamespace(cfg.Spec, specs.NetworkNamespace):
		// A fresh sysfs shows the network namespace it is mounted in (a new
		// one, or the one joined by path: init is in it by now); in the
		// host's, bind the host's /sys read-only, as runc does.
		pm.opts.recursive = true
		pm.opts.attrSet |= unix.MOUNT_ATTR_RDONLY
		pm.fd, _, err = cloneTree("/sys", true)
	case m.Type == "cgroup":
		return prepareCgroupMount(cfg, pm)
	default:
		pm.fd, err = newFilesystem(m.Type, m.Source, pm.opts.data)
	}
	return pm, err
}

// cloneTree makes a detached copy of the mount at src (open_tree).
func cloneTree(src string, recursive bool) (fd int, isFile bool, err error) {
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return -1, false, fmt.Errorf("bind source %s: %w", src, err)
	}
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	fd, err = unix.OpenTree(unix.AT_FDCWD, src, flags)
	if err != nil {
		return -1, false, fmt.Errorf("open_tree %s: %w", src, err)
	}
	return fd, st.Mode&unix.S_IFMT != unix.S_IFDIR, nil
}

// newFilesystem creates a detached mount of a new filesystem instance.
func newFilesystem(fstype, source string, data []string) (int, error) {
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen %s: %w", fstype, err)
	}
	defer unix.Close(fsfd)
	if source != "" {
		if err := unix.FsconfigSetString(fsfd, "source", source); err != nil {
			return -1, fmt.Errorf("source %q: %w", source, err)
		}
	}
	for _, d := range data {
		if err := fsconfigOption(fsfd, d); err != nil {
			return -1, err
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create %s superblock: %w", fstype, err)
	}
	fd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("fsmount %s: %w", fstype, err)
	}
	return fd, nil
}

func fsconfigOption(fsfd int, opt string) error {
	var err error
	if k, v, ok := strings.Cut(opt, "="); ok {
		err = unix.FsconfigSetString(fsfd, k, v)
	} else {
		err = unix.FsconfigSetFlag(fsfd, opt)
	}
	if err != nil {
		return fmt.Errorf("option %q: %w", opt, err)
	}
	return nil
}

// attachMount moves a prepared mount onto its destination inside the new
// root, then applies its attributes (ro, nosuid, ..., propagation).
func attachMount(root int, pm pendingMount) error {
	defer unix.Close(pm.fd)
	target, err := ensureTarget(root, pm.dest, pm.file)
	if err != nil {
		return stage("mount destination "+pm.dest, err)
	}
	defer unix.Close(target)
	if err := unix.MoveMount(pm.fd, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return stage("move mount to "+pm.dest, err)
	}
	for _, child := range pm.children {
		child.dest = path.Join(pm.dest, child.dest)
		if err := attachMount(root, child); err != nil {
			return err
		}
	}
	return stage("set attributes of "+pm.dest, setAttrs(pm.fd, pm.opts))
}

func setAttrs(fd int, o mountOpts) error {
	if o.attrSet == 0 && o.attrClr == 0 && o.propagation == 0 {
		return nil
	}
	flags := uint(unix.AT_EMPTY_PATH)
	if o.recursive {
		flags |= unix.AT_RECURSIVE
	}
	attr := unix.MountAttr{Attr_set: o.attrSet, Attr_clr: o.attrClr, Propagation: o.propagation}
	return unix.MountSetattr(fd, "", flags, &attr)
}

// Resolution inside the container root: ".." and absolute symlinks stop at
// root, and /proc magic links are refused.
const inRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

func openInRoot(root int, p string, flags uint64) (int, error) {
	for {
		fd, err := unix.Openat2(root, p, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: inRoot})
		if err != unix.EAGAIN && err != unix.EINTR {
			return fd, err
		}
	}
}

// mkdirAllInRoot creates the directory p and its parents inside root and
// returns an O_PATH handle to it. A dangling symlink on the way is followed
// (inside root) and its target created, as a mount would need.
func mkdirAllInRoot(root int, p string) (int, error) {
	return mkdirAllInRootDepth(root, p, 0)
}

func mkdirAllInRootDepth(root int, p string, depth int) (int, error) {
	if depth > 40 {
		return -1, unix.ELOOP
	}
	fd, err := unix.Dup(root)
	if err != nil {
		return -1, err
	}
	cur := "/"
	parts := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
	for i, part := range parts {
		if part == "" {
			continue
		}
		next := path.Join(cur, part)
		nfd, err := openInRoot(root, next, unix.O_PATH|unix.O_DIRECTORY)
		if err == unix.ENOENT {
			err = unix.Mkdirat(fd, part, 0o755)
			if err == unix.EEXIST {
				if target, lerr := readlinkat(fd, part); lerr == nil {
					unix.Close(fd)
					if !path.IsAbs(target) {
						target = path.Join(cur, target)
					}
					rest := append([]string{target}, parts[i+1:]...)
					return mkdirAllInRootDepth(root, path.Join(rest...), depth+1)
				}
			}
			if err == nil || err == unix.EEXIST {
				nfd, err = openInRoot(root, next, unix.O_PATH|unix.O_DIRECTORY)
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("%s: %w", next, err)
		}
		fd, cur = nfd, next
	}
	return fd, nil
}

func readlinkat(dir int, name string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(dir, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// ensureTarget returns a handle to the mount destination p, creating it (a
// directory, or an empty file for file binds) when missing.
func ensureTarget(root int, p string, file bool) (int, error) {
	if !file {
		return mkdirAllInRoot(root, p)
	}
	fd, err := openInRoot(root, p, unix.O_PATH)
	if err != unix.ENOENT {
		return fd, err
	}
	dir, err := mkdirAllInRoot(root, path.Dir(p))
	if err != nil {
		return -1, err
	}
	defer unix.Close(dir)
	f, err := unix.Openat(dir, path.Base(p), unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_RDONLY|unix.O_CLOEXEC, 0o644)
	if err != nil && err != unix.EEXIST {
		return -1, err
	}
	if err == nil {
		unix.Close(f)
	}
	return openInRoot(root, p, unix.O_PATH)
}

// pivotRoot makes rootfs the root and detaches the old one (runc's way:
// pivot_root(".", ".") stacks the old root on the new, then unmount it).
func pivotRoot(rootfs string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(oldroot)
	newroot, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(newroot)
	if err := unix.Fchdir(newroot); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Fchdir(oldroot); err != nil {
		return err
	}
	// Do not let the unmount propagate to the host.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount old root: %w", err)
	}
	return unix.Chdir("/")
}

// maskPath hides p: /dev/null over a file, an empty read-only tmpfs over a directory.
func maskPath(root int, p string) error {
	target, err := openInRoot(root, p, unix.O_PATH|unix.O_NOFOLLOW)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(target)
	var st unix.Stat_t
	if err := unix.Fstat(target, &st); err != nil {
		return err
	}
	var tree int
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		tree, err = newFilesystem("tmpfs", "tmpfs", []string{"size=0", "mode=0555"})
		if err == nil {
			err = unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
		}
	} else {
		tree, err = cloneDevNull(root)
	}
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	return unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

// cloneDevNull clones the container's /dev/null, after checking that it is
// the real device and not a file the image put there.
func cloneDevNull(root int) (int, error) {
	fd, err := openInRoot(root, "/dev/null", unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return -1, fmt.Errorf("/dev/null: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		return -1, errors.New("/dev/null is not the null device")
	}
	return unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
}

// readonlyPath bind-mounts p onto itself read-only (and nosuid, nodev, noexec, as runc).
func readonlyPath(root int, p string) error {
	target, err := openInRoot(root, p, unix.O_PATH|unix.O_NOFOLLOW)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(target)
	tree, err := unix.OpenTree(target, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return err
	}
	return unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

// cgroupMount is one cgroup hierarchy mounted on the host.
type cgroupMount struct {
	dir     string // mount point, e.g. /sys/fs/cgroup/memory
	fstype  string // cgroup or cgroup2
	options []string
}

func hostCgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	s := bufio.NewScanner(f)
	for s.Scan() {
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || (qf[0] != "cgroup" && qf[0] != "cgroup2") {
			continue
		}
		out = append(out, cgroupMount{dir: pf[4], fstype: qf[0], options: strings.Split(qf[2], ",")})
	}
	return out, s.Err()
}
