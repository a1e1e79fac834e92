package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/cgroups"
)

var namespaceFlags = map[specs.LinuxNamespaceType]uintptr{
	specs.PIDNamespace:     unix.CLONE_NEWPID,
	specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.MountNamespace:   unix.CLONE_NEWNS,
	specs.IPCNamespace:     unix.CLONE_NEWIPC,
	specs.UTSNamespace:     unix.CLONE_NEWUTS,
	specs.UserNamespace:    unix.CLONE_NEWUSER,
	specs.CgroupNamespace:  unix.CLONE_NEWCGROUP,
}

// joinableNamespaces can be entered with setns() by one thread of a Go
// program; the others (mount, user, pid) need a single-threaded process.
var joinableNamespaces = map[specs.LinuxNamespaceType]bool{
	specs.NetworkNamespace: true,
	specs.IPCNamespace:     true,
	specs.UTSNamespace:     true,
	specs.CgroupNamespace:  true,
}

// Create sets a container up from bundle and leaves it "created": its init
// waits for Start. On any error nothing is left: no process, cgroup or state.
func (r *Runtime) Create(ctx context.Context, id, bundle string, opts ...CreateOpt) (c *Container, err error) {
	var o createOptions
	defer func() {
		if o.spare != nil { // not taken: ended
			o.spare.Close()
		}
	}()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	bundle, err = filepath.Abs(bundle)
	if err != nil {
		return nil, err
	}
	spec, err := LoadSpec(bundle)
	if err != nil {
		return nil, err
	}
	if !hasNamespace(spec, specs.MountNamespace) {
		return nil, fmt.Errorf("create container %s: a mount namespace is required: %w", id, ErrInvalidSpec)
	}
	if spec.Process.Terminal && o.console == nil {
		return nil, fmt.Errorf("create container %s: the spec asks for a terminal but no console receiver was given (--console-socket)", id)
	}
	dir := r.dir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create container %s: %w", id, ErrExists)
		}
		return nil, fmt.Errorf("create container %s: %w", id, err)
	}
	c = &Container{ID: id, rt: r, rec: &record{
		ID: id, Bundle: bundle, Rootfs: RootfsPath(spec, bundle), Created: time.Now().UTC(),
		CgroupPath: cgroupPath(spec, id), Annotations: spec.Annotations,
	}}
	if spec.Hooks != nil {
		c.rec.Poststart, c.rec.Poststop = spec.Hooks.Poststart, spec.Hooks.Poststop
	}
	defer func() {
		if err != nil {
			c.abort()
			err = fmt.Errorf("create container %s: %w", id, err)
		}
	}()
	if err := unix.Mkfifo(filepath.Join(dir, execFifo), 0o600); err != nil {
		return c, fmt.Errorf("make exec fifo: %w", err)
	}
	if err := c.startInit(ctx, spec, &o); err != nil {
		return c, err
	}
	return c, c.rec.save(dir)
}

func cgroupPath(spec *specs.Spec, id string) string {
	if spec.Linux.CgroupsPath != "" {
		return path.Join("/", spec.Linux.CgroupsPath)
	}
	return path.Join("/berth", id)
}

// abort undoes a failed Create.
func (c *Container) abort() {
	if c.init != nil {
		_ = c.init.cmd.Process.Kill()
		<-c.init.done
	}
	_ = c.destroy()
}

// startInit starts the init process, makes its cgroup, sends init its config
// (with the means to join the cgroup) and waits until it reports ready.
func (c *Container) startInit(ctx context.Context, spec *specs.Spec, o *createOptions) error {
	var prog []byte
	var err error
	if spec.Linux.Seccomp != nil {
		if prog, err = c.rt.seccompProgram(spec.Linux.Seccomp); err != nil {
			return err
		}
	}
	var handed []int // for a spare: its exec fifo and stdio
	var handedStdio *handedStdio
	// A spare that does not fit, or is not taken, Create ends.
	if sp := o.spare; sp != nil && sp.fits(spec) {
		fifo, err := c.openExecFifo()
		if err != nil {
			return err
		}
		defer fifo.Close()
		o.spare = nil
		// From here on, abort (destroy) closes the socket and reaps init.
		handed, handedStdio = sp.handOver(c, o, fifo)
	} else {
		cmd, parent, err := c.initCommand(spec, o)
		if err != nil {
			return err
		}
		err = cmd.Start()
		closeChildFiles(cmd)
		if err != nil {
			parent.Close()
			return fmt.Errorf("start container init: %w", err)
		}
		// From here on, abort (destroy) closes the socket and reaps init.
		c.init, c.syncSock = watch(cmd), parent
	}
	c.rec.Pid = c.init.cmd.Process.Pid
	c.rec.PidStart, _ = procStart(c.rec.Pid)
	// The cgroup is made while init's Go runtime starts up, on the other
	// core: init only waits for its config, which comes after the cgroup.
	cg, err := cgroups.New(c.rec.CgroupPath, spec.Linux.Resources)
	if err != nil {
		return err
	}
	// Where it can (v1), init joins the cgroup itself, one thread, through
	// files sent with its config; see cgroups.Manager.SelfJoinFiles.
	joinFiles, err := cg.SelfJoinFiles()
	if err != nil {
		return err
	}
	defer cgroups.CloseFiles(joinFiles)
	if joinFiles == nil {
		if err = cg.Add(c.rec.Pid); err != nil {
			return err
		}
	}
	if err = setOOMScoreAdj(c.rec.Pid, spec.Process.OOMScoreAdj); err != nil {
		return err
	}
	fds := make([]int, len(joinFiles))
	for i, f := range joinFiles {
		fds[i] = int(f.Fd())
	}
	fds = append(fds, handed...)
	cfg := &initConfig{ID: c.ID, Spec: specForInit(spec), Rootfs: c.rec.Rootfs, CgroupPath: c.rec.CgroupPath, Seccomp: prog,
		Handed: handedStdio}
	if spec.Hooks != nil {
		cfg.State = hookState(c.ID, c.rec.Bundle, c.rec.Pid, specs.StateCreating, spec.Annotations)
	}
	if err = writeMsg(c.syncSock, syncMsg{Type: msgConfig, Config: cfg}, fds...); err != nil {
		return fmt.Errorf("send config to init: %w", err)
	}
	return c.awaitReady(ctx, o, cfg)
}

// specForInit is the spec without its seccomp section: init gets the
// compiled program instead, and Docker's profile is most of a spec's bytes.
func specForInit(spec *specs.Spec) *specs.Spec {
	s, l := *spec, *spec.Linux
	l.Seccomp = nil
	s.Linux = &l
	return &s
}

// HandOver leaves init to the program the calling process is about to
// become (execve keeps it init's parent): from now on this Container never
// reaps init, and its Wait and Delete must not be used. If init had ended
// and was reaped already, exited is true and code is its exit code.
func (c *Container) HandOver() (code int, exited bool) {
	if c.init == nil {
		return 0, false
	}
	return c.init.handOver()
}

func (c *Container) awaitReady(ctx context.Context, o *createOptions, cfg *initConfig) error {
	for {
		m, fds, err := readMsg(c.syncSock)
		if err != nil {
			return fmt.Errorf("container init exited during setup: %w", err)
		}
		switch m.Type {
		case msgError:
			return errors.New(m.Error)
		case msgReady:
			return nil
		case msgHooks:
			h := cfg.Spec.Hooks
			//lint:ignore SA1019 deprecated, and still run, as runc does
			if err := runHooks("prestart", h.Prestart, cfg.State); err != nil {
				return err
			}
			if err := runHooks("createRuntime", h.CreateRuntime, cfg.State); err != nil {
				return err
			}
			if err := writeMsg(c.syncSock, syncMsg{Type: msgHooksDone}); err != nil {
				return fmt.Errorf("resume init after hooks: %w", err)
			}
		case msgConsole:
			if len(fds) != 1 {
				return errors.New("init sent no pty master")
			}
			if err := o.console(os.NewFile(uintptr(fds[0]), "/dev/ptmx")); err != nil {
				return fmt.Errorf("hand over console: %w", err)
			}
		default:
			return fmt.Errorf("sync: unexpected %q", m.Type)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// initCommand builds the re-exec of the sealed binary in new namespaces.
func (c *Container) initCommand(spec *specs.Spec, o *createOptions) (*exec.Cmd, *os.File, error) {
	exe, err := sealedExe()
	if err != nil {
		return nil, nil, err
	}
	parent, child, err := socketPair()
	if err != nil {
		return nil, nil, err
	}
	fifo, err := c.openExecFifo()
	if err != nil {
		parent.Close()
		child.Close()
		return nil, nil, err
	}
	cmd := initCmd(exe, cloneFlags(spec), child, fifo)
	o.setStdio(cmd)
	if hasNamespace(spec, specs.UserNamespace) {
		cmd.SysProcAttr.UidMappings = idMaps(spec.Linux.UIDMappings)
		cmd.SysProcAttr.GidMappings = idMaps(spec.Linux.GIDMappings)
		cmd.SysProcAttr.GidMappingsEnableSetgroups = true
		// Become the namespace's root before execve, or the exec would run
		// as the unmapped host uid, with no capabilities in the namespace.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
	}
	return cmd, parent, nil
}

// initCmd is berthd re-executed as a container init in new namespaces
// (cloneflags), with files as fds 3 and on (the sync socket first).
func initCmd(exe string, cloneflags uintptr, files ...*os.File) *exec.Cmd {
	return &exec.Cmd{
		Path: exe,
		Args: []string{"berthd", InitArg},
		// init runs on one thread and lives a few milliseconds: one P from
		// the start and no collector (its anonymous memory stays near 1 MB)
		// spare it runtime threads. execve replaces this environment.
		Env:         []string{"GOMAXPROCS=1", "GOGC=off"},
		Dir:         "/",
		ExtraFiles:  files,
		SysProcAttr: &syscall.SysProcAttr{Cloneflags: cloneflags},
	}
}

// openExecFifo opens the exec fifo init waits reading: O_RDWR never
// blocks and keeps a reader while init lives (see releaseInit).
func (c *Container) openExecFifo() (*os.File, error) {
	return os.OpenFile(filepath.Join(c.rt.dir(c.ID), execFifo), os.O_RDWR, 0)
}

func closeChildFiles(cmd *exec.Cmd) {
	for _, f := range cmd.ExtraFiles {
		f.Close()
	}
}

// setStdio gives cmd the caller's stdio. A nil *os.File in an io.Reader
// would not be nil: only real files are assigned.
func (o *createOptions) setStdio(cmd *exec.Cmd) {
	if o.stdin != nil {
		cmd.Stdin = o.stdin
	}
	if o.stdout != nil {
		cmd.Stdout = o.stdout
	}
	if o.stderr != nil {
		cmd.Stderr = o.stderr
	}
}

// cloneFlags are the namespaces created at clone time. The cgroup namespace
// is unshared by init itself, once it is in its cgroup, so that the
// namespace's root is the container's cgroup.
func cloneFlags(spec *specs.Spec) uintptr {
	var flags uintptr
	for _, ns := range spec.Linux.Namespaces {
		if ns.Path == "" && ns.Type != specs.CgroupNamespace {
			flags |= namespaceFlags[ns.Type]
		}
	}
	return flags
}

func idMaps(in []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(in))
	for i, m := range in {
		out[i] = syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)}
	}
	return out
}

// setOOMScoreAdj is written by the parent: lowering it needs
// CAP_SYS_RESOURCE, which a root daemon may lack (it does on some VMs).
func setOOMScoreAdj(pid int, adj *int) error {
	if adj == nil {
		return nil
	}
	p := "/proc/" + itoa(pid) + "/oom_score_adj"
	if err := os.WriteFile(p, []byte(itoa(*adj)), 0); err != nil {
		return fmt.Errorf("set oom_score_adj to %d: %w (lowering it needs CAP_SYS_RESOURCE)", *adj, err)
	}
	return nil
}
