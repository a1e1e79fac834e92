package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/profiles/seccomp"
	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"tags.cncf.io/container-device-interface/pkg/parser"

	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/runtime"
)

// defaultShmSize is Docker's /dev/shm size.
const defaultShmSize = 64 << 20

// cfsPeriod is the CFS period --cpus is expressed in, as in Docker.
const cfsPeriod = 100000

// ContainerSpec builds a container's runtime spec, as Docker does, from
// the image's run config (after the request's overrides), the request's
// Config and HostConfig, and the mounted rootfs (users are resolved in its
// /etc/passwd and /etc/group).
func ContainerSpec(rootfs string, rc image.RunConfig, cfg *container.Config, hc *container.HostConfig) (*specs.Spec, error) {
	if hc == nil {
		hc = &container.HostConfig{}
	}
	s, err := runtime.DefaultSpec(rootfs, rc.Args...)
	if err != nil {
		return nil, err
	}
	if err := image.ApplyToSpec(s, rc, rootfs); err != nil {
		return nil, invalid(err)
	}
	if cfg != nil {
		s.Process.Terminal = cfg.Tty
		if cfg.Tty && hc != nil && hc.ConsoleSize[0] > 0 && hc.ConsoleSize[1] > 0 {
			s.Process.ConsoleSize = &specs.Box{Height: hc.ConsoleSize[0], Width: hc.ConsoleSize[1]}
		}
		if cfg.Hostname != "" {
			s.Hostname = cfg.Hostname
		}
		if cfg.Domainname != "" {
			s.Domainname = cfg.Domainname
		}
	}
	steps := []func(*specs.Spec, *container.HostConfig) error{
		applyNamespaces, applyResources, applyCapabilities, applyPrivileged, applyMounts,
		applyDevices, applyUlimits, applyMisc, applyHostnameEnv,
	}
	for _, step := range steps {
		if err := step(s, hc); err != nil {
			return nil, err
		}
	}
	// Docker's profile allows syscalls by capability: compute it for the
	// final set, after CapAdd and CapDrop.
	if !hc.Privileged {
		if s.Linux.Seccomp, err = seccomp.GetDefaultProfile(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func invalid(err error) error { return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err) }

// applyHostnameEnv sets HOSTNAME to the container's host name, as Docker
// does, unless the image or the run set it.
func applyHostnameEnv(s *specs.Spec, _ *container.HostConfig) error {
	if s.Hostname != "" && !slices.ContainsFunc(s.Process.Env, func(e string) bool { return strings.HasPrefix(e, "HOSTNAME=") }) {
		s.Process.Env = append(s.Process.Env, "HOSTNAME="+s.Hostname)
	}
	return nil
}

func applyNamespaces(s *specs.Spec, hc *container.HostConfig) error {
	switch mode := string(hc.NetworkMode); mode {
	case "none":
	case "host":
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
			return ns.Type == specs.NetworkNamespace
		})
		s.Hostname = ""
		if h, err := os.Hostname(); err == nil {
			s.Hostname = h
		}
	default:
		// container:NAME: the other container's namespace, whose path the
		// daemon writes at each start (it may change between runs).
		// A bridge network (the default or a user's, by name): a network
		// namespace of its own, which the daemon points at the one it
		// wires at each start. Built alone (a build's RUN), it stays empty.
	}
	if hc.PidMode == "host" {
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
			return ns.Type == specs.PIDNamespace
		})
	}
	if hc.IpcMode == "host" {
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
			return ns.Type == specs.IPCNamespace
		})
	}
	return nil
}

func applyResources(s *specs.Spec, hc *container.HostConfig) error {
	r := s.Linux.Resources
	mem := &specs.LinuxMemory{}
	if hc.Memory > 0 {
		mem.Limit = ptr(hc.Memory)
		swap := hc.MemorySwap
		if swap == 0 {
			swap = 2 * hc.Memory // Docker's default: as much swap as memory
		}
		mem.Swap = ptr(swap)
	} else if hc.MemorySwap > 0 {
		return invalid(errors.New("a memory-swap limit needs a memory limit"))
	}
	if hc.MemorySwap > 0 && hc.MemorySwap < hc.Memory {
		return invalid(errors.New("memory-swap must be at least memory"))
	}
	if hc.MemoryReservation > 0 {
		mem.Reservation = ptr(hc.MemoryReservation)
	}
	if mem.Limit != nil || mem.Reservation != nil {
		r.Memory = mem
	}
	cpu := &specs.LinuxCPU{}
	if hc.NanoCPUs > 0 {
		if hc.CPUQuota > 0 || hc.CPUPeriod > 0 {
			return invalid(errors.New("--cpus and --cpu-quota/--cpu-period conflict"))
		}
		cpu.Period, cpu.Quota = ptr(uint64(cfsPeriod)), ptr(hc.NanoCPUs*cfsPeriod/1e9)
	}
	if hc.CPUQuota > 0 {
		cpu.Quota = ptr(hc.CPUQuota)
	}
	if hc.CPUPeriod > 0 {
		cpu.Period = ptr(uint64(hc.CPUPeriod))
	}
	if hc.CPUShares > 0 {
		cpu.Shares = ptr(uint64(hc.CPUShares))
	}
	cpu.Cpus, cpu.Mems = hc.CpusetCpus, hc.CpusetMems
	if *cpu != (specs.LinuxCPU{}) {
		r.CPU = cpu
	}
	if hc.PidsLimit != nil && *hc.PidsLimit > 0 {
		r.Pids = &specs.LinuxPids{Limit: hc.PidsLimit}
	}
	return nil
}

// normalizeCap turns "net_admin" into "CAP_NET_ADMIN".
func normalizeCap(c string) string {
	c = strings.ToUpper(c)
	if c != "ALL" && !strings.HasPrefix(c, "CAP_") {
		c = "CAP_" + c
	}
	return c
}

func allCapabilities() []string {
	var out []string
	for _, c := range capability.ListKnown() {
		out = append(out, "CAP_"+strings.ToUpper(c.String()))
	}
	return out
}

func applyCapabilities(s *specs.Spec, hc *container.HostConfig) error {
	known := allCapabilities()
	caps := slices.Clone(s.Process.Capabilities.Bounding)
	for _, c := range hc.CapAdd {
		c = normalizeCap(c)
		switch {
		case c == "ALL":
			caps = slices.Clone(known)
		case !slices.Contains(known, c):
			return invalid(fmt.Errorf("unknown capability %q", c))
		case !slices.Contains(caps, c):
			caps = append(caps, c)
		}
	}
	for _, c := range hc.CapDrop {
		c = normalizeCap(c)
		if c == "ALL" {
			caps = nil
			continue
		}
		if !slices.Contains(known, c) {
			return invalid(fmt.Errorf("unknown capability %q", c))
		}
		caps = slices.DeleteFunc(caps, func(x string) bool { return x == c })
	}
	setCaps(s, caps)
	return nil
}

func setCaps(s *specs.Spec, caps []string) {
	s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
}

// applyPrivileged gives all capabilities and devices, and no seccomp,
// masked or read-only paths, as docker run --privileged does.
func applyPrivileged(s *specs.Spec, hc *container.HostConfig) error {
	if !hc.Privileged {
		return nil
	}
	setCaps(s, allCapabilities())
	s.Linux.Seccomp = nil
	s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
	s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	for i, m := range s.Mounts {
		if m.Destination == "/sys" || m.Destination == "/sys/fs/cgroup" {
			s.Mounts[i].Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "ro" })
		}
	}
	return nil
}

// setShmSize gives /dev/shm its options, with size bytes.
func setShmSize(s *specs.Spec, size int64) {
	for i, m := range s.Mounts {
		if m.Destination == "/dev/shm" {
			s.Mounts[i].Options = []string{"nosuid", "noexec", "nodev", "mode=1777", "size=" + strconv.FormatInt(size, 10)}
		}
	}
}

func applyMounts(s *specs.Spec, hc *container.HostConfig) error {
	shm := hc.ShmSize
	if shm <= 0 {
		shm = defaultShmSize
	}
	setShmSize(s, shm)
	s.Root.Readonly = hc.ReadonlyRootfs
	for _, b := range hc.Binds {
		m, err := parseBind(b)
		if err != nil {
			return err
		}
		s.Mounts = append(s.Mounts, m)
	}
	for _, m := range hc.Mounts {
		sm, err := specMount(m)
		if err != nil {
			return err
		}
		s.Mounts = append(s.Mounts, sm)
	}
	for dst, opts := range hc.Tmpfs {
		o := []string{"nosuid", "nodev", "noexec"}
		if opts != "" {
			o = append(o, strings.Split(opts, ",")...)
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: dst, Type: "tmpfs", Source: "tmpfs", Options: o})
	}
	return nil
}

// parseBind reads -v SRC:DST[:OPTS] with an absolute host path (named
// volumes come with the volume work).
func parseBind(b string) (specs.Mount, error) {
	parts := strings.Split(b, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return specs.Mount{}, invalid(fmt.Errorf("bind %q: want SRC:DST[:ro|rw]", b))
	}
	src, dst := parts[0], parts[1]
	if !filepath.IsAbs(src) {
		return specs.Mount{}, invalid(fmt.Errorf("bind %q: named volumes are not supported yet; give an absolute host path", b))
	}
	if !filepath.IsAbs(dst) {
		return specs.Mount{}, invalid(fmt.Errorf("bind %q: the container path must be absolute", b))
	}
	// As docker -v does: a missing host path is made, a directory.
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(src, 0o755); err != nil {
			return specs.Mount{}, invalid(fmt.Errorf("bind %q: %w", b, err))
		}
	} else if err != nil {
		return specs.Mount{}, invalid(fmt.Errorf("bind %q: %w", b, err))
	}
	opts := []string{"rbind", "rprivate"}
	if len(parts) == 3 {
		for _, o := range strings.Split(parts[2], ",") {
			switch o {
			case "ro", "rw":
				opts = append(opts, o)
			case "z", "Z":
				// SELinux relabeling: nothing to do here.
			default:
				return specs.Mount{}, invalid(fmt.Errorf("bind %q: unknown option %q", b, o))
			}
		}
	}
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}, nil
}

func specMount(m mount.Mount) (specs.Mount, error) {
	if !filepath.IsAbs(m.Target) {
		return specs.Mount{}, invalid(fmt.Errorf("mount target %q must be absolute", m.Target))
	}
	switch m.Type {
	case mount.TypeBind:
		if _, err := os.Stat(m.Source); err != nil {
			return specs.Mount{}, invalid(fmt.Errorf("bind source %q: %w", m.Source, err))
		}
		opts := []string{"rbind", "rprivate"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		return specs.Mount{Destination: m.Target, Type: "bind", Source: m.Source, Options: opts}, nil
	case mount.TypeTmpfs:
		opts := []string{"nosuid", "nodev", "noexec"}
		if m.TmpfsOptions != nil && m.TmpfsOptions.SizeBytes > 0 {
			opts = append(opts, "size="+strconv.FormatInt(m.TmpfsOptions.SizeBytes, 10))
		}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		return specs.Mount{Destination: m.Target, Type: "tmpfs", Source: "tmpfs", Options: opts}, nil
	}
	return specs.Mount{}, invalid(fmt.Errorf("mount type %q is not supported yet", m.Type))
}

// applyDevices adds --device nodes and lets the device cgroup allow them.
func applyDevices(s *specs.Spec, hc *container.HostConfig) error {
	for _, d := range hc.Devices {
		if parser.IsQualifiedName(d.PathOnHost) {
			continue // a CDI device: see pkg/gpu
		}
		var st unix.Stat_t
		if err := unix.Stat(d.PathOnHost, &st); err != nil {
			return invalid(fmt.Errorf("device %s: %w", d.PathOnHost, err))
		}
		typ := ""
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			typ = "c"
		case unix.S_IFBLK:
			typ = "b"
		default:
			return invalid(fmt.Errorf("device %s: not a device node", d.PathOnHost))
		}
		dst := d.PathInContainer
		if dst == "" {
			dst = d.PathOnHost
		}
		perms := d.CgroupPermissions
		if perms == "" {
			perms = "rwm"
		}
		major, minor := int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		mode := os.FileMode(st.Mode & 0o777)
		s.Linux.Devices = append(s.Linux.Devices, specs.LinuxDevice{Path: dst, Type: typ, Major: major, Minor: minor,
			FileMode: &mode, UID: ptr(st.Uid), GID: ptr(st.Gid)})
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices,
			specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: &major, Minor: &minor, Access: perms})
	}
	return nil
}

func applyUlimits(s *specs.Spec, hc *container.HostConfig) error {
	for _, u := range hc.Ulimits {
		typ := "RLIMIT_" + strings.ToUpper(u.Name)
		if _, ok := rlimitNames[typ]; !ok {
			return invalid(fmt.Errorf("ulimit %q: unknown", u.Name))
		}
		s.Process.Rlimits = slices.DeleteFunc(s.Process.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == typ })
		s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: typ, Soft: uint64(u.Soft), Hard: uint64(u.Hard)})
	}
	return nil
}

var rlimitNames = map[string]bool{
	"RLIMIT_AS": true, "RLIMIT_CORE": true, "RLIMIT_CPU": true, "RLIMIT_DATA": true, "RLIMIT_FSIZE": true,
	"RLIMIT_LOCKS": true, "RLIMIT_MEMLOCK": true, "RLIMIT_MSGQUEUE": true, "RLIMIT_NICE": true,
	"RLIMIT_NOFILE": true, "RLIMIT_NPROC": true, "RLIMIT_RSS": true, "RLIMIT_RTPRIO": true,
	"RLIMIT_RTTIME": true, "RLIMIT_SIGPENDING": true, "RLIMIT_STACK": true,
}

func applyMisc(s *specs.Spec, hc *container.HostConfig) error {
	if hc.OomScoreAdj != 0 {
		s.Process.OOMScoreAdj = ptr(hc.OomScoreAdj)
	}
	if len(hc.Sysctls) > 0 {
		s.Linux.Sysctl = hc.Sysctls
	}
	for _, g := range hc.GroupAdd {
		gid, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return invalid(fmt.Errorf("group %q: only numeric groups are supported", g))
		}
		s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, uint32(gid))
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
