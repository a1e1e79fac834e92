package cgroups

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cg "github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Root is where the cgroup hierarchies are mounted.
const Root = "/sys/fs/cgroup"

// Mode is the cgroup layout of the host.
type Mode = cg.CGMode

// HostMode reports whether the host runs cgroup v1, hybrid or v2.
func HostMode() Mode { return cg.Mode() }

// Discover finds the host's cgroup layout now, ahead of the first cgroup
// made: spare shims call it while they wait for a container.
func Discover() {
	if HostMode() != cg.Unified {
		_, _ = v1Hierarchy()
	}
}

// Manager controls one container's cgroup.
type Manager interface {
	// Path is the cgroup path relative to the hierarchy root, e.g. /berth/web.
	Path() string
	// Add moves a process into the cgroup.
	Add(pid int) error
	// SelfJoinFiles opens, in every hierarchy, the file through which a
	// thread moves itself into the group by writing "0" to it. They are
	// nil where a group can only be joined by a whole process (v2).
	SelfJoinFiles() ([]*os.File, error)
	// Stats reads current usage.
	Stats() (*Stats, error)
	// OOMKilled reports whether the OOM killer has ended a process in the group.
	OOMKilled() bool
	// Procs lists the processes in the group.
	Procs() ([]int, error)
	// Kill sends SIGKILL to every process in the group.
	Kill() error
	// Delete removes the cgroup; processes must have exited.
	Delete() error
}

// Stats is the usage of a cgroup.
type Stats struct {
	MemoryUsage uint64 // bytes
	MemoryLimit uint64 // bytes, 0 when unlimited
	CPUUsage    uint64 // nanoseconds
	Pids        uint64
	OOMKills    uint64
}

// ValidatePath checks a spec's cgroupsPath. An empty path means the default.
func ValidatePath(p string) error {
	if strings.Contains(p, ":") {
		return fmt.Errorf("cgroupsPath %q: systemd slice paths are not supported, use a plain path", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fmt.Errorf("cgroupsPath %q: must not contain \"..\"", p)
		}
	}
	return nil
}

// New creates the cgroup at p (relative to the hierarchy root) and applies res.
func New(p string, res *specs.LinuxResources) (Manager, error) {
	p = path.Join("/", p)
	if res == nil {
		res = &specs.LinuxResources{}
	}
	res = withDefaultDevices(res)
	if HostMode() == cg.Unified {
		return newV2(p, res)
	}
	return newV1(p, res)
}

// RemoveParents removes the empty group p (e.g. /berth) from every
// hierarchy. Callers use it once no container can be created under p any
// more: removing a parent while another group is being created under it
// would race with that creation.
func RemoveParents(p string) {
	p = path.Join("/", p)
	if HostMode() == cg.Unified {
		_ = os.Remove(filepath.Join(Root, p))
		return
	}
	subs, _ := v1Hierarchy()
	for _, s := range subs {
		_ = os.Remove(filepath.Join(Root, string(s.Name()), p))
	}
}

// Load opens an existing cgroup at p for stats, kill and delete.
func Load(p string) (Manager, error) {
	p = path.Join("/", p)
	if HostMode() == cg.Unified {
		m, err := cgroup2.Load(p)
		if err != nil {
			return nil, fmt.Errorf("load cgroup %s: %w", p, err)
		}
		return &v2{path: p, m: m}, nil
	}
	c, err := cgroup1.Load(cgroup1.StaticPath(p), cgroup1.WithHierarchy(v1Hierarchy))
	if err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", p, err)
	}
	return &v1{path: p, c: c}, nil
}

// defaultDevices are the nodes every container gets, after a deny-all: a
// device is reachable only when a rule grants it, as with runc and Docker.
var defaultDevices = []specs.LinuxDeviceCgroup{
	devRule("c", 1, 3), devRule("c", 1, 5), devRule("c", 1, 7), // null zero full
	devRule("c", 1, 8), devRule("c", 1, 9), // random urandom
	devRule("c", 5, 0), devRule("c", 5, 1), devRule("c", 5, 2), // tty console ptmx
	devRule("c", 136, -1), // /dev/pts/*
}

func devRule(typ string, major, minor int64) specs.LinuxDeviceCgroup {
	r := specs.LinuxDeviceCgroup{Allow: true, Type: typ, Major: &major, Access: "rwm"}
	if minor >= 0 {
		r.Minor = &minor
	}
	return r
}

// withDefaultDevices puts a deny-all before the spec's rules and the default
// allow rules after them, so every container gets /dev/null and ptys.
func withDefaultDevices(res *specs.LinuxResources) *specs.LinuxResources {
	out := *res
	denyAll := specs.LinuxDeviceCgroup{Allow: false, Access: "rwm"}
	out.Devices = append(append([]specs.LinuxDeviceCgroup{denyAll}, res.Devices...), defaultDevices...)
	return &out
}

// v1Hierarchy lists the v1 controllers mounted on this host, skipping the
// ones containerd's default list knows but the host lacks (or binds to v2).
// It is found once per process (the hierarchies do not change while berth
// runs; containerd only reads the list): reading mountinfo and the hugepage
// sizes again cost each create, join and delete of a cgroup.
var v1Hierarchy = sync.OnceValues(func() ([]cgroup1.Subsystem, error) {
	subs, err := cgroup1.Default()
	if err != nil {
		return nil, err
	}
	var out []cgroup1.Subsystem
	for _, s := range subs {
		if _, err := os.Stat(filepath.Join(Root, string(s.Name()))); err == nil {
			out = append(out, s)
		}
	}
	return out, nil
})

type v1 struct {
	path string
	c    cgroup1.Cgroup
}

func newV1(p string, res *specs.LinuxResources) (Manager, error) {
	if res.Memory != nil && res.Memory.Swap != nil && !fileExists(filepath.Join(Root, "memory", "memory.memsw.limit_in_bytes")) {
		return nil, errors.New("memory swap limit: this kernel has no swap accounting (memory.memsw.limit_in_bytes is missing)")
	}
	c, err := cgroup1.New(cgroup1.StaticPath(p), res, cgroup1.WithHierarchy(v1Hierarchy))
	if err != nil {
		// New may have created some controllers' directories before failing.
		if l, lerr := cgroup1.Load(cgroup1.StaticPath(p), cgroup1.WithHierarchy(v1Hierarchy)); lerr == nil {
			_ = l.Delete()
		}
		return nil, fmt.Errorf("create cgroup %s: %w", p, err)
	}
	return &v1{path: p, c: c}, nil
}

func (m *v1) Path() string { return m.path }

func (m *v1) Add(pid int) error {
	if err := m.c.Add(cgroup1.Process{Pid: pid}); err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, m.path, err)
	}
	return nil
}

// SelfJoinFiles opens each hierarchy's tasks file. Moving a process through
// cgroup.procs takes the kernel's global threadgroup lock for writing, which
// waits for an RCU grace period: about 5 ms on this VM for the first move, on
// the container's start path. A thread that writes "0" to tasks moves only
// itself and skips that lock. Container init does so from the thread that
// later calls execve, so the container's process starts inside the group;
// init's other runtime threads stay outside and die at execve. The files
// are opened by the caller, and v1 checks the opener's credentials, so they
// work from inside a user namespace too.
func (m *v1) SelfJoinFiles() ([]*os.File, error) {
	subs, err := v1Hierarchy()
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, s := range subs {
		f, err := os.OpenFile(filepath.Join(Root, string(s.Name()), m.path, "tasks"), os.O_WRONLY, 0)
		if err != nil {
			CloseFiles(files)
			return nil, fmt.Errorf("open cgroup %s: %w", m.path, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// CloseFiles closes files, ignoring errors.
func CloseFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// JoinSelf moves the calling thread into the groups whose tasks files are
// open as fds (from SelfJoinFiles, possibly in another process).
func JoinSelf(fds []int) error {
	for _, fd := range fds {
		if _, err := syscall.Write(fd, []byte("0")); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	return nil
}

func (m *v1) Stats() (*Stats, error) {
	st, err := m.c.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s stats: %w", m.path, err)
	}
	out := &Stats{OOMKills: m.oomKills()}
	if st.Memory != nil && st.Memory.Usage != nil {
		out.MemoryUsage = st.Memory.Usage.Usage
		out.MemoryLimit = st.Memory.Usage.Limit
	}
	if st.CPU != nil && st.CPU.Usage != nil {
		out.CPUUsage = st.CPU.Usage.Total
	}
	if st.Pids != nil {
		out.Pids = st.Pids.Current
	}
	return out, nil
}

// OOMFile is the file of group p whose oom_kill line counts the processes
// the kernel's OOM killer ended in it: memory.oom_control on v1 (kernel
// 4.13+), memory.events on v2. berth-monitor reads it at a container's end.
func OOMFile(p string) string {
	p = path.Join("/", p)
	if HostMode() == cg.Unified {
		return filepath.Join(Root, p, "memory.events")
	}
	return filepath.Join(Root, "memory", p, "memory.oom_control")
}

func (m *v1) oomKills() uint64 { return readKey(OOMFile(m.path), "oom_kill") }

func (m *v1) OOMKilled() bool { return m.oomKills() > 0 }

func (m *v1) Kill() error { return killProcs(filepath.Join(Root, "pids", m.path, "cgroup.procs")) }

func (m *v1) Procs() ([]int, error) {
	return readProcs(filepath.Join(Root, "pids", m.path, "cgroup.procs"))
}

func (m *v1) Delete() error { return Delete(m.path) }

// Delete removes the group p from every hierarchy with rmdir, which the
// kernel refuses while a process is inside; a missing group is no error.
// It needs no Load: containerd's Delete walks and reads every hierarchy
// first and sleeps 10 ms on a busy group, while a container that has just
// been reaped leaves its groups at once.
func Delete(p string) error {
	p = path.Join("/", p)
	pattern := filepath.Join(Root, "*", p)
	if HostMode() == cg.Unified {
		pattern = filepath.Join(Root, p)
	}
	dirs, err := filepath.Glob(pattern)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		errs = append(errs, rmdirRetry(d))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete cgroup %s: %w", p, err)
	}
	return nil
}

// rmdirRetry removes an empty cgroup, retrying while the kernel still
// counts an exiting task in it (EBUSY): usually for well under a
// millisecond, but for much longer on a loaded machine, so the wait grows
// up to about 3 s in all.
func rmdirRetry(dir string) error {
	var err error
	wait := 500 * time.Microsecond
	for deadline := time.Now().Add(3 * time.Second); ; {
		// rmdir, not os.Remove, which tries unlink first: a failed path walk
		// into cgroupfs per hierarchy.
		if err = syscall.Rmdir(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

type v2 struct {
	path string
	m    *cgroup2.Manager
}

func newV2(p string, res *specs.LinuxResources) (Manager, error) {
	m, err := cgroup2.NewManager(Root, p, cgroup2.ToResources(res))
	if err != nil {
		if l, lerr := cgroup2.Load(p); lerr == nil {
			_ = l.Delete()
		}
		return nil, fmt.Errorf("create cgroup %s: %w", p, err)
	}
	return &v2{path: p, m: m}, nil
}

func (m *v2) Path() string { return m.path }

func (m *v2) Add(pid int) error {
	if err := m.m.AddProc(uint64(pid)); err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, m.path, err)
	}
	return nil
}

// SelfJoinFiles is nil on v2: a thread can only join a threaded group.
func (m *v2) SelfJoinFiles() ([]*os.File, error) { return nil, nil }

func (m *v2) Stats() (*Stats, error) {
	st, err := m.m.Stat()
	if err != nil {
		return nil, fmt.Errorf("cgroup %s stats: %w", m.path, err)
	}
	out := &Stats{OOMKills: m.oomKills()}
	if st.Memory != nil {
		out.MemoryUsage, out.MemoryLimit = st.Memory.Usage, st.Memory.UsageLimit
	}
	if st.CPU != nil {
		out.CPUUsage = st.CPU.UsageUsec * 1000
	}
	if st.Pids != nil {
		out.Pids = st.Pids.Current
	}
	return out, nil
}

func (m *v2) oomKills() uint64 { return readKey(OOMFile(m.path), "oom_kill") }

func (m *v2) OOMKilled() bool { return m.oomKills() > 0 }

func (m *v2) Kill() error { return m.m.Kill() }

func (m *v2) Procs() ([]int, error) { return readProcs(filepath.Join(Root, m.path, "cgroup.procs")) }

// readProcs reads a cgroup.procs file.
func readProcs(file string) ([]int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func (m *v2) Delete() error { return Delete(m.path) }

// readKey returns the value of "key N" in a flat keyed cgroup file, 0 if absent.
func readKey(file, key string) uint64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 2 && f[0] == key {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func killProcs(procsFile string) error {
	b, err := os.ReadFile(procsFile)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = killPid(pid)
		}
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
