package runtime

import (
	"fmt"
	"path"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/cgroups"
)

// prepareCgroupMount builds the container's /sys/fs/cgroup. In a cgroup
// namespace a fresh mount of each hierarchy shows the container's own group
// as its root. Without one (or for v1 in a user namespace, where v1 cannot
// be mounted) the container's group directories are bind-mounted instead.
func prepareCgroupMount(cfg *initConfig, pm pendingMount) (pendingMount, error) {
	hier, err := hostCgroupMounts()
	if err != nil {
		return pm, err
	}
	cgroupns := hasNamespace(cfg.Spec, specs.CgroupNamespace)
	userns := hasNamespace(cfg.Spec, specs.UserNamespace)
	if len(hier) == 1 && hier[0].fstype == "cgroup2" && hier[0].dir == cgroups.Root {
		pm.fd, err = cgroupHierarchy(hier[0], cgroupns, cfg.CgroupPath)
		return pm, err
	}
	pm.fd, err = newFilesystem("tmpfs", "cgroup", []string{"mode=755"})
	if err != nil {
		return pm, err
	}
	childAttrs := mountOpts{attrSet: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC | pm.opts.attrSet&unix.MOUNT_ATTR_RDONLY}
	for _, h := range hier {
		if path.Dir(h.dir) != cgroups.Root {
			continue
		}
		fresh := cgroupns && (h.fstype == "cgroup2" || !userns)
		fd, err := cgroupHierarchy(h, fresh, cfg.CgroupPath)
		if err == unix.ENOENT {
			continue // a hierarchy where the container has no group (v2 in hybrid mode)
		}
		if err != nil {
			closePending([]pendingMount{pm})
			return pm, fmt.Errorf("cgroup hierarchy %s: %w", h.dir, err)
		}
		pm.children = append(pm.children, pendingMount{dest: path.Base(h.dir), fd: fd, opts: childAttrs})
	}
	return pm, nil
}

func cgroupHierarchy(h cgroupMount, fresh bool, cgroupPath string) (int, error) {
	if !fresh {
		fd, _, err := cloneTree(path.Join(h.dir, cgroupPath), false)
		if err != nil && strings.Contains(err.Error(), "no such file") {
			return -1, unix.ENOENT
		}
		return fd, err
	}
	var opts []string
	for _, o := range h.options {
		// rw/ro are mount attributes; a release agent is never handed on.
		if o != "rw" && o != "ro" && !strings.HasPrefix(o, "release_agent=") {
			opts = append(opts, o)
		}
	}
	return newFilesystem(h.fstype, "cgroup", opts)
}
