package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/cgroups"
)

// Status values, as in the OCI runtime spec.
const (
	StatusCreated = specs.StateCreated
	StatusRunning = specs.StateRunning
	StatusStopped = specs.StateStopped
)

var (
	// ErrNotFound is returned for an unknown container ID.
	ErrNotFound = errors.New("container not found")
	// ErrExists is returned when creating a container whose ID is taken.
	ErrExists = errors.New("container already exists")
	// ErrNotStopped is returned when an operation needs a stopped container.
	ErrNotStopped = errors.New("container is not stopped")
	// ErrWrongState is returned when an operation does not fit the container's status.
	ErrWrongState = errors.New("container is in the wrong state")
)

// Runtime manages containers whose state lives under one root directory.
type Runtime struct {
	root string
}

// New returns a Runtime keeping state under root, which it creates (mode 0700).
func New(root string) (*Runtime, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("create runtime root: %w", err)
	}
	return &Runtime{root: abs}, nil
}

// Root is the state directory.
func (r *Runtime) Root() string { return r.root }

// CreateOpt configures Create.
type CreateOpt func(*createOptions) error

type createOptions struct {
	stdin, stdout, stderr *os.File
	console               func(master *os.File) error
	spare                 *SpareInit
}

// WithSpareInit offers Create a spare init: used if the container's
// namespaces fit it, else ended. Either way Create owns it.
func WithSpareInit(s *SpareInit) CreateOpt {
	return func(o *createOptions) error {
		o.spare = s
		return nil
	}
}

// WithStdio gives the container these files as fds 0, 1 and 2 (nil: /dev/null).
func WithStdio(stdin, stdout, stderr *os.File) CreateOpt {
	return func(o *createOptions) error {
		o.stdin, o.stdout, o.stderr = stdin, stdout, stderr
		return nil
	}
}

// WithConsole receives the pty master of a container whose spec asks for a
// terminal. It is required for such containers; the callee owns the file.
func WithConsole(fn func(master *os.File) error) CreateOpt {
	return func(o *createOptions) error {
		o.console = fn
		return nil
	}
}

// Container is one container. Only the process that created it can Wait for it.
type Container struct {
	ID  string
	rt  *Runtime
	rec *record

	// set only in the creating process
	init     *child
	syncSock *os.File
	mu       sync.Mutex
}

func (r *Runtime) dir(id string) string { return filepath.Join(r.root, id) }

// Load opens an existing container by ID.
func (r *Runtime) Load(id string) (*Container, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	rec, err := loadRecord(r.dir(id))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("container %s: %w", id, ErrNotFound)
		}
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	return &Container{ID: id, rt: r, rec: rec}, nil
}

// List returns the IDs of all containers under the root, sorted.
func (r *Runtime) List() ([]string, error) {
	ents, err := os.ReadDir(r.root)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(r.root, e.Name(), stateFile)); err == nil {
			ids = append(ids, e.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Pid is the container's init process as seen from the host.
func (c *Container) Pid() int { return c.rec.Pid }

// Bundle is the bundle directory the container was created from.
func (c *Container) Bundle() string { return c.rec.Bundle }

// CgroupPath is the container's cgroup, below the hierarchies' root.
func (c *Container) CgroupPath() string { return c.rec.CgroupPath }

func (c *Container) status() specs.ContainerState {
	if c.init != nil {
		select {
		case <-c.init.done:
			return StatusStopped
		default:
		}
	}
	if !c.rec.running() {
		return StatusStopped
	}
	if _, err := os.Lstat(filepath.Join(c.rt.dir(c.ID), execFifo)); err == nil {
		return StatusCreated
	}
	return StatusRunning
}

// State reports the container's status and what berth knows about it.
func (c *Container) State() (*State, error) {
	st := &State{
		State: specs.State{
			Version: specs.Version, ID: c.ID, Status: c.status(),
			Bundle: c.rec.Bundle, Annotations: c.rec.Annotations,
		},
		Created: c.rec.Created, Rootfs: c.rec.Rootfs, CgroupPath: c.rec.CgroupPath,
	}
	if st.Status != StatusStopped {
		st.Pid = c.rec.Pid
	}
	if cg, err := cgroups.Load(c.rec.CgroupPath); err == nil {
		st.OOMKilled = cg.OOMKilled()
	}
	if st.Status == StatusStopped && c.init != nil {
		<-c.init.done
		code := c.init.exitCode
		st.ExitCode = &code
	}
	return st, nil
}

// Stats reads the container's cgroup usage.
func (c *Container) Stats() (*cgroups.Stats, error) {
	cg, err := cgroups.Load(c.rec.CgroupPath)
	if err != nil {
		return nil, err
	}
	return cg.Stats()
}

// Start releases a created container's init, which then execs the process.
func (c *Container) Start(ctx context.Context) error {
	sock, err := c.Release()
	if err != nil {
		return err
	}
	if sock != nil {
		// init closes its end with a successful execve; anything else is an error.
		m, _, err := readMsg(sock)
		sock.Close()
		if err == nil && m.Type == msgError {
			return fmt.Errorf("start container %s: %s", c.ID, m.Error)
		}
	}
	warnHooks("poststart", c.rec.Poststart, c.hookState(StatusRunning))
	return nil
}

// Release is Start for a caller that leaves the wait for init's execve to
// another process: it lets init go on and hands over the sync socket
// (nil if this process did not create the container). On it, init's
// execve closes init's end (EOF: started), or init sends its error, one
// packet: {"type":"error","error":"..."}. berth-monitor reads it while the
// shim that released init becomes the monitor. Poststart hooks are not run
// (HasPoststart): Start's.
func (c *Container) Release() (*os.File, error) {
	if st := c.status(); st != StatusCreated {
		return nil, fmt.Errorf("start container %s: status is %s: %w", c.ID, st, ErrWrongState)
	}
	fifo := filepath.Join(c.rt.dir(c.ID), execFifo)
	if err := c.releaseInit(fifo); err != nil {
		return nil, fmt.Errorf("start container %s: %w", c.ID, err)
	}
	_ = os.Remove(fifo)
	c.mu.Lock()
	defer c.mu.Unlock()
	sock := c.syncSock
	c.syncSock = nil
	return sock, nil
}

// HasPoststart reports whether the spec has poststart hooks, which Start
// runs and Release does not.
func (c *Container) HasPoststart() bool { return len(c.rec.Poststart) > 0 }

func (c *Container) hookState(status specs.ContainerState) *specs.State {
	return hookState(c.ID, c.rec.Bundle, c.rec.Pid, status, c.rec.Annotations)
}

// releaseInit writes init's go-ahead into the exec fifo. Init holds the
// fifo open for reading (O_RDWR), so a non-blocking open for writing fails
// with ENXIO when init is gone, instead of hanging.
func (c *Container) releaseInit(fifo string) error {
	fd, err := unix.Open(fifo, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err == unix.ENXIO {
		return errors.New("container init is not running")
	}
	if err != nil {
		return fmt.Errorf("open exec fifo: %w", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte{0}); err != nil {
		return fmt.Errorf("write exec fifo: %w", err)
	}
	return nil
}

// Kill sends sig to the container's process.
func (c *Container) Kill(sig syscall.Signal) error {
	if c.status() == StatusStopped {
		return fmt.Errorf("kill container %s: not running: %w", c.ID, ErrWrongState)
	}
	if err := unix.Kill(c.rec.Pid, sig); err != nil {
		return fmt.Errorf("kill container %s: %w", c.ID, err)
	}
	return nil
}

// Wait blocks until the container's process exits and returns its exit
// code: the process's own, or 128+signal when a signal ended it.
func (c *Container) Wait(ctx context.Context) (int, error) {
	if c.init == nil {
		return -1, fmt.Errorf("wait container %s: only the process that created it can wait", c.ID)
	}
	select {
	case <-c.init.done:
		return c.init.exitCode, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// Delete removes a stopped (or created) container's cgroup and state. With
// force, a running container is killed first.
func (c *Container) Delete(ctx context.Context, force bool) error {
	switch st := c.status(); {
	case st == StatusRunning && !force:
		return fmt.Errorf("delete container %s: it is running (kill it first, or force): %w", c.ID, ErrNotStopped)
	case st != StatusStopped:
		if err := c.killAndReap(ctx); err != nil {
			return fmt.Errorf("delete container %s: %w", c.ID, err)
		}
	}
	if err := c.destroy(); err != nil {
		return err
	}
	warnHooks("poststop", c.rec.Poststop, c.hookState(StatusStopped))
	return nil
}

func (c *Container) killAndReap(ctx context.Context) error {
	_ = unix.Kill(c.rec.Pid, unix.SIGKILL)
	if cg, err := cgroups.Load(c.rec.CgroupPath); err == nil {
		_ = cg.Kill()
	}
	for c.status() != StatusStopped {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// destroy removes what the container left: its cgroup and its state dir.
func (c *Container) destroy() error {
	c.closeSync()
	var errs []error
	errs = append(errs, cgroups.Delete(c.rec.CgroupPath))
	errs = append(errs, os.RemoveAll(c.rt.dir(c.ID)))
	return errors.Join(errs...)
}

func (c *Container) closeSync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.syncSock != nil {
		c.syncSock.Close()
		c.syncSock = nil
	}
}

// exitCode maps a wait status to a shell-style exit code.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func itoa(i int) string { return strconv.Itoa(i) }
