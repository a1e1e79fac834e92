package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/runtime"
	"github.com/berth-containers/berth/pkg/shim"
)

// Exec is a process to run, or running, in a container: docker exec.
// Execs live in memory only, as Docker's do: a daemon restart forgets them
// (their processes run on under their shims).
type Exec struct {
	ID          string
	ContainerID string
	Config      container.ExecCreateRequest

	mu       sync.Mutex
	started  bool
	running  bool
	pid      int
	exitCode *int
}

// ExecState is an exec's inspectable state.
type ExecState struct {
	Running  bool
	Pid      int
	ExitCode *int
}

// execs holds the daemon's execs by ID.
type execs struct {
	mu sync.Mutex
	m  map[string]*Exec
}

func (d *Daemon) execDir(e *Exec) string {
	return filepath.Join(d.containerDir(e.ContainerID), "exec", e.ID)
}

// ExecCreate records an exec for a running container.
func (d *Daemon) ExecCreate(ctr *Container, cfg container.ExecCreateRequest) (*Exec, error) {
	if len(cfg.Cmd) == 0 {
		return nil, invalid(errors.New("no command given"))
	}
	if st := d.ctrs.State(ctr); st.Status != container.StateRunning {
		return nil, notRunning(ctr.ID)
	}
	e := &Exec{ID: newID(), ContainerID: ctr.ID, Config: cfg}
	d.execs.mu.Lock()
	defer d.execs.mu.Unlock()
	if d.execs.m == nil {
		d.execs.m = map[string]*Exec{}
	}
	d.execs.m[e.ID] = e
	return e, nil
}

// ExecGet finds an exec by ID.
func (d *Daemon) ExecGet(id string) (*Exec, error) {
	d.execs.mu.Lock()
	defer d.execs.mu.Unlock()
	if e, ok := d.execs.m[id]; ok {
		return e, nil
	}
	return nil, errdefs.ErrNotFound.WithMessage("No such exec instance: " + id)
}

// ExecState reports where an exec is.
func (d *Daemon) ExecState(e *Exec) ExecState {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running {
		// The shim records the exit before it ends the attached streams;
		// a client that inspects as soon as its stream ends must see it,
		// though the watcher below may not have read it yet. (The watcher
		// removes the dir only after it took the lock to update e.)
		if ex, err := shim.ReadExit(d.execDir(e)); err == nil {
			return ExecState{Pid: e.pid, ExitCode: &ex.ExitCode}
		}
	}
	return ExecState{Running: e.running, Pid: e.pid, ExitCode: e.exitCode}
}

// ExecStart starts the exec's process through a shim of its own. With
// attach, its streams are claimed before it starts and returned (stdin in;
// output raw for a terminal, multiplexed otherwise).
func (d *Daemon) ExecStart(e *Exec, attach, tty bool, size *[2]uint) (*Attachment, error) {
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return nil, fmt.Errorf("exec %s has already been started: %w", e.ID[:12], errdefs.ErrConflict)
	}
	e.started = true
	e.mu.Unlock()
	ctr, err := d.ctrs.Get(e.ContainerID)
	if err != nil {
		return nil, err
	}
	if st := d.ctrs.State(ctr); st.Status != container.StateRunning {
		return nil, notRunning(ctr.ID)
	}
	proc, err := d.execProcess(ctr, e, tty, size)
	if err != nil {
		return nil, err
	}
	dir := d.execDir(e)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	cfg := shim.Config{ID: ctr.ID, RuntimeRoot: d.ctrs.rt.Root(), Tty: proc.Terminal,
		OpenStdin: e.Config.AttachStdin, StdinOnce: e.Config.AttachStdin, Exec: proc}
	launch, err := d.ctrs.launcher.Create(dir, cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, invalid(err)
	}
	var att *Attachment
	if attach && (e.Config.AttachStdin || e.Config.AttachStdout || e.Config.AttachStderr) {
		conn, err := shim.Attach(dir, shim.AttachOptions{Stdin: e.Config.AttachStdin, Stdout: e.Config.AttachStdout, Stderr: e.Config.AttachStderr})
		if err != nil {
			launch.Abort()
			return nil, err
		}
		att = &Attachment{conn: conn}
	}
	watch, _ := shim.Watch(dir)
	if err := launch.Start(); err != nil {
		if att != nil {
			att.conn.Close()
		}
		if watch != nil {
			watch.Close()
		}
		os.RemoveAll(dir)
		// Docker's codes: 127 for a command not found, else 126.
		code := 126
		if strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "no such file") {
			code = 127
		}
		e.mu.Lock()
		e.exitCode = &code
		e.mu.Unlock()
		return nil, err
	}
	e.mu.Lock()
	e.running, e.pid = true, launch.Pid()
	e.mu.Unlock()
	go func() {
		if watch != nil {
			shim.AwaitEnd(watch, dir)
		}
		// The shim writes exit.json before it closes the watch; with no
		// watch it was gone already.
		code := 255
		if ex, err := shim.ReadExit(dir); err == nil {
			code = ex.ExitCode
		}
		e.mu.Lock()
		e.running, e.exitCode = false, &code
		e.mu.Unlock()
		os.RemoveAll(dir)
	}()
	return att, nil
}

// execProcess is the exec's process: the container's, with the exec's
// command, environment, directory, user and terminal.
func (d *Daemon) execProcess(ctr *Container, e *Exec, tty bool, size *[2]uint) (*specs.Process, error) {
	spec, err := runtime.LoadSpec(filepath.Join(d.containerDir(ctr.ID), "bundle"))
	if err != nil {
		return nil, err
	}
	p := *spec.Process
	p.Args = e.Config.Cmd
	p.Env = append(append([]string(nil), p.Env...), e.Config.Env...)
	p.Terminal = e.Config.Tty || tty
	p.ConsoleSize = nil
	if s := e.Config.ConsoleSize; p.Terminal && s != nil && s[0] > 0 {
		p.ConsoleSize = &specs.Box{Height: s[0], Width: s[1]}
	}
	if p.Terminal && size != nil && size[0] > 0 {
		p.ConsoleSize = &specs.Box{Height: size[0], Width: size[1]}
	}
	if e.Config.WorkingDir != "" {
		p.Cwd = e.Config.WorkingDir
	}
	if e.Config.User != "" {
		rootfs := spec.Root.Path
		if !filepath.IsAbs(rootfs) {
			rootfs = filepath.Join(d.containerDir(ctr.ID), "bundle", rootfs)
		}
		if p.User, err = image.ResolveUser(rootfs, e.Config.User); err != nil {
			return nil, invalid(err)
		}
	}
	if e.Config.Privileged {
		all := allCapabilities()
		p.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
	}
	return &p, nil
}

// ExecResize sets the size of a running exec's terminal.
func (d *Daemon) ExecResize(e *Exec, height, width uint16) error {
	if !d.ExecState(e).Running {
		return fmt.Errorf("exec %s is not running: %w", e.ID[:12], errdefs.ErrConflict)
	}
	return shim.Resize(d.execDir(e), shim.Size{Height: height, Width: width})
}
