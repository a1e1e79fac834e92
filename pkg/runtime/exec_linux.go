package runtime

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/internal/osthread"
	"github.com/berth-containers/berth/pkg/cgroups"
)

// Process is a process started in a running container by Exec. Only the
// process that started it can Wait for it.
type Process struct {
	*child
}

// Pid is the process as seen from the host.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// HandOver leaves the process to the program the calling process is about
// to become, as Container.HandOver does: Wait must not be used then.
func (p *Process) HandOver() (code int, exited bool) { return p.handOver() }

// Wait blocks until the process exits and returns its exit code (128+signal
// when a signal ended it).
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.done:
		return p.exitCode, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// Kill sends sig to the process.
func (p *Process) Kill(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// namespaceOrder is the order exec joins namespaces in: the mount
// namespace last, since the others are opened through the host's /proc.
var namespaceOrder = []specs.LinuxNamespaceType{specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace,
	specs.PIDNamespace, specs.CgroupNamespace, specs.MountNamespace}

// Exec starts p in the running container: in its namespaces and cgroup,
// with p's credentials, capabilities and the container's seccomp filter.
// Stdio comes from WithStdio, or a new pty of the container's from
// WithConsole when p.Terminal is set.
//
// Go cannot enter a mount namespace from a multi-threaded process, but one
// thread can, once it stopped sharing its filesystem context
// (unshare(CLONE_FS)); a child forked from that thread starts in every
// namespace the thread joined, the pid namespace included. That child is
// berthd's init in exec mode, which sets the process up and execs it.
func (c *Container) Exec(ctx context.Context, p *specs.Process, opts ...CreateOpt) (*Process, error) {
	var o createOptions
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if c.status() != StatusRunning {
		return nil, fmt.Errorf("exec in container %s: not running: %w", c.ID, ErrWrongState)
	}
	if p == nil || len(p.Args) == 0 {
		return nil, fmt.Errorf("exec in container %s: no command: %w", c.ID, ErrInvalidSpec)
	}
	if p.Terminal && o.console == nil {
		return nil, fmt.Errorf("exec in container %s: a terminal needs a console receiver", c.ID)
	}
	spec, err := LoadSpec(c.rec.Bundle)
	if err != nil {
		return nil, err
	}
	if hasNamespace(spec, specs.UserNamespace) {
		return nil, fmt.Errorf("exec in container %s: containers with a user namespace cannot be entered yet: %w", c.ID, errors.ErrUnsupported)
	}
	var prog []byte
	if spec.Linux.Seccomp != nil {
		if prog, err = c.rt.seccompProgram(spec.Linux.Seccomp); err != nil {
			return nil, err
		}
	}
	if _, err := sealedExe(); err != nil {
		return nil, err
	}
	if err := staticExe(); err != nil {
		return nil, fmt.Errorf("exec in container %s: %w", c.ID, err)
	}
	parent, child, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	// The sealed binary is passed at a fixed fd (4, after the sync socket):
	// the child resolves /proc/self/fd/4 through the container's /proc, and
	// its own fd shuffling could land on any other number.
	cmd := &exec.Cmd{
		Path:       "/proc/self/fd/4",
		Args:       []string{"berthd", InitArg},
		Env:        []string{"GOMAXPROCS=1", "GOGC=off"},
		ExtraFiles: []*os.File{child, sealed.f},
	}
	o.setStdio(cmd)
	if err := c.startInNamespaces(cmd, spec); err != nil {
		child.Close()
		return nil, fmt.Errorf("exec in container %s: %w", c.ID, err)
	}
	child.Close() // not closeChildFiles: the sealed binary stays ours
	proc := &Process{watch(cmd)}
	fail := func(err error) (*Process, error) {
		_ = cmd.Process.Kill()
		<-proc.done
		return nil, fmt.Errorf("exec in container %s: %w", c.ID, err)
	}
	cg, err := cgroups.Load(c.rec.CgroupPath)
	if err != nil {
		return fail(err)
	}
	if err := cg.Add(proc.Pid()); err != nil {
		return fail(err)
	}
	if err := setOOMScoreAdj(proc.Pid(), spec.Process.OOMScoreAdj); err != nil {
		return fail(err)
	}
	s := specForInit(spec)
	s.Process = p
	cfg := &initConfig{ID: c.ID, Spec: s, CgroupPath: c.rec.CgroupPath, Seccomp: prog, Exec: true}
	if err := writeMsg(parent, syncMsg{Type: msgConfig, Config: cfg}); err != nil {
		return fail(fmt.Errorf("send config: %w", err))
	}
	for {
		m, fds, err := readMsg(parent)
		if err != nil {
			return fail(fmt.Errorf("exec init ended during setup: %w", err))
		}
		switch m.Type {
		case msgError:
			return fail(errors.New(m.Error))
		case msgReady:
			return proc, nil
		case msgConsole:
			if len(fds) != 1 {
				return fail(errors.New("no pty master"))
			}
			if err := o.console(os.NewFile(uintptr(fds[0]), "/dev/ptmx")); err != nil {
				return fail(err)
			}
		default:
			return fail(fmt.Errorf("sync: unexpected %q", m.Type))
		}
	}
}

// startInNamespaces starts cmd from a thread that joined the container's
// namespaces; the thread is thrown away afterwards (its goroutine ends
// locked), so no other goroutine ever runs in them.
func (c *Container) startInNamespaces(cmd *exec.Cmd, spec *specs.Spec) error {
	// Opened through the host's /proc before any is joined.
	var fds []int
	var types []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for _, t := range namespaceOrder {
		if !hasNamespace(spec, t) {
			continue
		}
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/%s", c.rec.Pid, nsFile[t]), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s namespace: %w", t, err)
		}
		fds = append(fds, fd)
		types = append(types, int(namespaceFlags[t]))
	}
	return osthread.Throwaway(func() error {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unshare fs: %w", err)
		}
		for i, fd := range fds {
			if err := unix.Setns(fd, types[i]); err != nil {
				return fmt.Errorf("join namespace %d: %w", types[i], err)
			}
		}
		// The init path resolves in the child, which is in the container's
		// mount and pid namespaces and sees its fds in the container's /proc.
		return cmd.Start()
	})
}

// nsFile names the namespaces' files under /proc/PID/ns.
var nsFile = map[specs.LinuxNamespaceType]string{
	specs.PIDNamespace: "pid", specs.NetworkNamespace: "net", specs.MountNamespace: "mnt", specs.IPCNamespace: "ipc",
	specs.UTSNamespace: "uts", specs.UserNamespace: "user", specs.CgroupNamespace: "cgroup",
}

// staticExe fails for a dynamically linked binary: exec runs it inside
// the container, where its loader is not.
var staticExe = sync.OnceValue(func() error {
	f, err := elf.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("this binary is dynamically linked and cannot run inside containers: build it static (CGO_ENABLED=0)")
		}
	}
	return nil
})
