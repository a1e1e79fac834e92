package gpu

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// Driver capabilities (NVIDIA_DRIVER_CAPABILITIES), as the NVIDIA container
// toolkit names them; defaultCapabilities when the container says nothing.
var (
	allCapabilities     = []string{"compute", "compat32", "display", "graphics", "ngx", "utility", "video"}
	defaultCapabilities = []string{"compute", "utility"}
)

// driverLibraries are the user-space driver libraries each capability
// needs, by the name before ".so" (libnvidia-container's lists).
var driverLibraries = map[string][]string{
	"utility": {"libnvidia-ml", "libnvidia-cfg", "libnvidia-nscq"},
	"compute": {"libcuda", "libcudadebugger", "libnvidia-opencl", "libnvidia-gpucomp", "libnvidia-ptxjitcompiler",
		"libnvidia-fatbinaryloader", "libnvidia-allocator", "libnvidia-compiler", "libnvidia-pkcs11",
		"libnvidia-pkcs11-openssl3", "libnvidia-nvvm"},
	"video": {"libvdpau_nvidia", "libnvidia-encode", "libnvidia-opticalflow", "libnvcuvid"},
	"graphics": {"libnvidia-eglcore", "libnvidia-glcore", "libnvidia-tls", "libnvidia-glsi", "libnvidia-fbc",
		"libnvidia-ifr", "libnvidia-rtcore", "libnvoptix", "libGLX_nvidia", "libEGL_nvidia", "libGLESv2_nvidia",
		"libGLESv1_CM_nvidia", "libnvidia-glvkspirv", "libnvidia-cbl"},
	"ngx": {"libnvidia-ngx"},
}

// driverTools are the driver's programs each capability brings.
var driverTools = map[string][]string{
	"utility": {"nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"},
	"compute": {"nvidia-cuda-mps-control", "nvidia-cuda-mps-server"},
}

// toolDirs are searched, under the driver root, for driverTools.
var toolDirs = []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"}

// controlNodes every GPU container gets, where they exist: the driver's
// control device, unified memory, and modesetting. /dev/nvidia-caps (MIG
// configuration and monitoring) is left out: it is privileged, and MIG
// devices are not offered.
var controlNodes = []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"}

// nvidiaGPU is one GPU the driver reports in /proc/driver/nvidia/gpus.
type nvidiaGPU struct {
	Index int // nvidia-smi's: the order of PCI bus IDs
	Minor int // of /dev/nvidiaN
	UUID  string
	Model string
	BusID string
}

// driver is what discovery found under one root.
type driver struct {
	root string // its real path, symlinks resolved
	gpus []nvidiaGPU
}

// discover reads the GPUs from root's /proc/driver/nvidia. No directory
// (no driver loaded) is no GPU and no error.
func discover(root string) (*driver, error) {
	// Resolved once: resolve compares the real paths of libraries with it.
	real, err := filepath.EvalSymlinks(root)
	if errors.Is(err, fs.ErrNotExist) {
		return &driver{root: root}, nil
	}
	if err != nil {
		return nil, err
	}
	d := &driver{root: real}
	dir := filepath.Join(real, "proc/driver/nvidia/gpus")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		g, err := readGPUInformation(filepath.Join(dir, e.Name(), "information"))
		if err != nil {
			return nil, fmt.Errorf("nvidia GPU %s: %w", e.Name(), err)
		}
		if g.BusID == "" {
			g.BusID = e.Name()
		}
		d.gpus = append(d.gpus, g)
	}
	slices.SortFunc(d.gpus, func(a, b nvidiaGPU) int { return strings.Compare(strings.ToLower(a.BusID), strings.ToLower(b.BusID)) })
	for i := range d.gpus {
		d.gpus[i].Index = i
	}
	return d, nil
}

// readGPUInformation parses the driver's "Key: value" lines.
func readGPUInformation(p string) (nvidiaGPU, error) {
	g := nvidiaGPU{Minor: -1}
	f, err := os.Open(p)
	if err != nil {
		return g, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "Model":
			g.Model = v
		case "GPU UUID":
			g.UUID = v
		case "Bus Location":
			g.BusID = v
		case "Device Minor":
			if g.Minor, err = strconv.Atoi(v); err != nil {
				return g, fmt.Errorf("device minor %q: %w", v, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return g, err
	}
	if g.Minor < 0 || g.UUID == "" {
		return g, errors.New("no device minor or GPU UUID in " + p)
	}
	return g, nil
}

// edits are what a container holding gpus needs: their nodes and the
// control nodes, the libraries and tools of caps, mounted read-only, and
// the hook that rebuilds the container's ld cache (ldconfig: the host's,
// or none when the rootfs cannot take one).
func (d *driver) edits(gpus []nvidiaGPU, caps []string, ldconfig, rootfs string) (*cdispec.ContainerEdits, error) {
	e := &cdispec.ContainerEdits{}
	node := func(p string) {
		// "m" too: the runtime makes the node in the container's /dev
		// after joining the device cgroup.
		e.DeviceNodes = append(e.DeviceNodes, &cdispec.DeviceNode{Path: p, HostPath: filepath.Join(d.root, p), Permissions: "rwm"})
	}
	for _, g := range gpus {
		p := "/dev/nvidia" + strconv.Itoa(g.Minor)
		if _, err := os.Stat(filepath.Join(d.root, p)); err != nil {
			return nil, fmt.Errorf("GPU %d: %w", g.Index, err)
		}
		node(p)
	}
	for _, p := range controlNodes {
		if _, err := os.Stat(filepath.Join(d.root, p)); err == nil {
			node(p)
		} else if p == "/dev/nvidiactl" {
			return nil, fmt.Errorf("nvidia driver: %w", err)
		}
	}
	libs, err := d.libraries(caps)
	if err != nil {
		return nil, err
	}
	ro := []string{"ro", "nosuid", "nodev", "rbind", "rprivate"}
	dirs := map[string]bool{}
	for _, l := range libs {
		e.Mounts = append(e.Mounts, &cdispec.Mount{HostPath: filepath.Join(d.root, l), ContainerPath: l, Options: ro})
		dirs[path.Dir(l)] = true
	}
	for _, t := range d.tools(caps) {
		e.Mounts = append(e.Mounts, &cdispec.Mount{HostPath: filepath.Join(d.root, t), ContainerPath: t, Options: ro})
	}
	if len(dirs) > 0 && ldconfig != "" {
		// -r: ldconfig chroots into the rootfs first, so the image's
		// symlinks and ld.so.conf resolve inside it; the directories of the
		// mounted libraries are scanned besides the image's own.
		args := append([]string{"ldconfig", "-r", rootfs}, slices.Sorted(maps.Keys(dirs))...)
		e.Hooks = append(e.Hooks, &cdispec.Hook{HookName: "createContainer", Path: ldconfig, Args: args})
	}
	return e, nil
}

// libraries finds the libraries of caps in the root's ld cache and
// returns the files they resolve to, as paths inside the root.
func (d *driver) libraries(caps []string) ([]string, error) {
	cache, err := readLDCache(filepath.Join(d.root, "etc/ld.so.cache"))
	if err != nil {
		return nil, fmt.Errorf("nvidia driver libraries: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, c := range caps {
		for _, name := range driverLibraries[c] {
			for soname, paths := range cache {
				if !strings.HasPrefix(soname, name+".so") {
					continue
				}
				for _, p := range paths {
					real, err := d.resolve(p)
					if err != nil || seen[real] {
						continue
					}
					seen[real] = true
					out = append(out, real)
				}
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// resolve follows p's symlinks inside the root, as the kernel resolves a
// path in a chroot (an absolute link, such as /lib64 -> /usr/lib64, is
// relative to the root). The result, a path inside the root, must be a
// regular file.
func (d *driver) resolve(p string) (string, error) {
	dirfd, err := unix.Open(d.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(dirfd)
	fd, err := unix.Openat2(dirfd, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return "", &fs.PathError{Op: "resolve", Path: p, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("%s: not a file", p)
	}
	real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(d.root, real)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s: resolves outside %s", p, d.root)
	}
	return "/" + rel, nil
}

// tools finds the driver's programs for caps under the root.
func (d *driver) tools(caps []string) []string {
	var out []string
	for _, c := range caps {
		for _, name := range driverTools[c] {
			for _, dir := range toolDirs {
				p := path.Join(dir, name)
				if _, err := d.resolve(p); err == nil {
					out = append(out, p)
					break
				}
			}
		}
	}
	return out
}

// driverCapabilities reads NVIDIA_DRIVER_CAPABILITIES from env: unset or
// empty is compute,utility; "all" is every one.
func driverCapabilities(env []string) ([]string, error) {
	v := ""
	for _, e := range env {
		if s, ok := strings.CutPrefix(e, "NVIDIA_DRIVER_CAPABILITIES="); ok {
			v = s
		}
	}
	if v == "" {
		return defaultCapabilities, nil
	}
	var caps []string
	for _, c := range strings.Split(v, ",") {
		c = strings.TrimSpace(c)
		switch {
		case c == "all":
			return allCapabilities, nil
		case slices.Contains(allCapabilities, c):
			caps = append(caps, c)
		case c != "":
			return nil, fmt.Errorf("NVIDIA_DRIVER_CAPABILITIES: unknown capability %q (want some of %s, or all)", c, strings.Join(allCapabilities, ","))
		}
	}
	return caps, nil
}
