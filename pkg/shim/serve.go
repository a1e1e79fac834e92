package shim

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/cgroups"
	"github.com/berth-containers/berth/pkg/logs"
	"github.com/berth-containers/berth/pkg/runtime"
)

// Run is the shim's main: "berthd __berth_shim DIR", or "-" for a shim
// started ahead, which reads DIR from fd 5. It never returns an
// error to a caller that could show it, so it reports on the status pipe
// or in exit.json.
func Run(dir string) int {
	s := &server{attachers: map[*attacher]struct{}{}}
	if dir == "-" { // started ahead: wait for a container, with an init ahead too
		// fds 3 to 5 are the daemon's pipes, not close-on-exec: the spare
		// must not hold them (the status pipe would outlive the shim).
		for _, fd := range []int{statusFd, goFd, dirFd} {
			unix.CloseOnExec(fd)
		}
		s.spare, _ = runtime.StartSpareInit() // without one, Create starts init
		runtime.WarmJSON()
		// encoding/json builds its tables for shim.json's types, an exec's
		// process among them, on the first decode, whatever it holds.
		_ = json.Unmarshal([]byte("{}"), new(Config))
		cgroups.Discover()
		if dir = readDir(); dir == "" {
			if s.spare != nil {
				s.spare.Close()
			}
			return 0
		}
	}
	s.dir = dir
	statusW := os.NewFile(statusFd, "status")
	release := os.NewFile(goFd, "release")
	enc := json.NewEncoder(statusW)
	report := func(st status) { _ = enc.Encode(st) }
	exit, err := s.run(report, release)
	if err != nil {
		report(status{Error: err.Error()})
		exit = &Exit{ExitCode: 255, Error: err.Error(), FinishedAt: time.Now().UTC()}
	}
	statusW.Close()
	// The runtime state and the mount go before exit.json is written: once
	// it is, the daemon may start the container again. Until then the
	// shim's socket says it runs.
	if s.cleanup != nil {
		s.cleanup()
	}
	werr := RecordExit(dir, *exit)
	s.finish()
	if werr != nil {
		return 1
	}
	return 0
}

// server is the shim's state: the container, its stdio and the clients of
// its socket.
type server struct {
	dir   string
	cfg   Config
	spare *runtime.SpareInit // an init started ahead, for Create
	ln    net.Listener
	sock  os.FileInfo // DIR/shim.sock as bound
	log   *logs.Writer
	// monitor: the shim becomes berth-monitor once the container runs
	// (Config.Monitor); until then nothing reads the output, and attach
	// clients are only registered, so that the monitor takes them over
	// with nothing read or written in between.
	monitor bool
	outputs []output       // unread output streams (monitor)
	handed  []*attacher    // registered attach clients (monitor)
	serving sync.WaitGroup // the accept loop and its handlers

	mu        sync.Mutex
	attachers map[*attacher]struct{}
	waiters   []waiter
	stdin     io.WriteCloser // the stdin pipe or the pty master; nil without
	console   *os.File
	cleanup   func()
	drained   sync.WaitGroup // attachers still writing

	pumps     sync.WaitGroup // output streams still copied
	childEnds []*os.File     // the pipes' far ends, the process's once it runs
}

// waiter is a client told of the end by the closing of its connection.
type waiter struct {
	conn   net.Conn
	record bool // it offered to record the end (berth-monitor asks it)
}

// output is one of the container's output streams.
type output struct {
	stream string
	f      *os.File
}

func (s *server) run(report func(status), release *os.File) (*Exit, error) {
	var err error
	if s.cfg, err = readConfig(s.dir); err != nil {
		return nil, err
	}
	cfg := s.cfg
	s.monitor = cfg.Monitor != ""
	// The socket is bound by a relative name: DIR may be longer than a
	// socket address allows.
	if err := os.Chdir(s.dir); err != nil {
		return nil, err
	}
	os.Remove(socketFile)
	if s.ln, err = net.Listen("unix", socketFile); err != nil {
		return nil, fmt.Errorf("shim socket: %w", err)
	}
	// Removed by finish, if still ours; berth-monitor goes on listening
	// on it.
	s.ln.(*net.UnixListener).SetUnlinkOnClose(false)
	s.sock, _ = os.Stat(socketFile)
	s.serving.Add(1)
	go s.serve()
	rt, err := runtime.New(cfg.RuntimeRoot)
	if err != nil {
		return nil, err
	}
	if cfg.LogPath != "" && !s.monitor {
		if s.log, err = logs.Open(cfg.LogPath, cfg.LogMaxSize, cfg.LogMaxFiles); err != nil {
			return nil, err
		}
		defer s.log.Close()
	}
	opts, err := s.stdio()
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if cfg.Exec != nil {
		if s.spare != nil {
			s.spare.Close()
		}
		return s.runExec(ctx, rt, opts, report, release)
	}
	if s.spare != nil {
		opts = append(opts, runtime.WithSpareInit(s.spare)) // Create owns it now
	}
	c, err := rt.Create(ctx, cfg.ID, cfg.Bundle, opts...)
	s.closeChildEnds()
	if err != nil {
		s.pumps.Wait()
		return nil, err
	}
	if err := s.pumpConsole(); err != nil {
		_ = c.Delete(ctx, true)
		return nil, err
	}
	s.cleanup = func() {
		_ = c.Delete(ctx, true)
		if cfg.Unmount != "" {
			_ = unix.Unmount(cfg.Unmount, unix.MNT_DETACH)
		}
	}
	report(status{Pid: c.Pid()})
	// Attach clients connect now; the daemon then says go (or hangs up).
	if !released(release) {
		_ = c.Delete(ctx, true)
		s.pumps.Wait()
		return nil, fmt.Errorf("container %s was not started", cfg.ID)
	}
	if s.monitor && !c.HasPoststart() {
		// The monitor sees the start through (init's error, or EOF at
		// its execve, on the sync socket) and reports it: the shim's
		// execve, 2 ms of a Go process's teardown, runs on one core
		// while init drops privileges and execs on the other, instead
		// of between the container's start and the first moment its
		// exit can be reaped.
		syncSock, err := c.Release()
		if err != nil {
			_ = c.Delete(ctx, true)
			s.pumps.Wait()
			return nil, err
		}
		err = s.becomeMonitor(c, syncSock)
		s.cleanup()
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		_ = c.Delete(ctx, true)
		s.pumps.Wait()
		return nil, err
	}
	report(status{Started: true})
	if s.monitor {
		// Returns only if the shim could not become the monitor.
		err := s.becomeMonitor(c, nil)
		s.cleanup()
		return nil, err
	}
	shedStartupMemory()
	code, err := c.Wait(ctx)
	s.pumps.Wait()
	exit := &Exit{ExitCode: code, FinishedAt: time.Now().UTC()}
	if st, serr := c.State(); serr == nil {
		exit.OOMKilled = st.OOMKilled
	}
	if err != nil {
		exit.Error = err.Error()
	}
	return exit, nil
}

// stdio prepares the process's stdio: for a terminal, a receiver of the
// pty master the runtime makes; else pipes whose output is pumped, and a
// stdin pipe when asked for.
func (s *server) stdio() ([]runtime.CreateOpt, error) {
	if s.cfg.Tty {
		return []runtime.CreateOpt{runtime.WithConsole(func(master *os.File) error {
			s.console = master
			return nil
		})}, nil
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	var inR *os.File
	if s.cfg.OpenStdin {
		var inW *os.File
		if inR, inW, err = os.Pipe(); err != nil {
			return nil, err
		}
		s.stdin = inW
		s.childEnds = append(s.childEnds, inR)
	}
	s.childEnds = append(s.childEnds, outW, errW)
	if s.monitor {
		s.outputs = []output{{"stdout", outR}, {"stderr", errR}}
	} else {
		s.pump("stdout", outR)
		s.pump("stderr", errR)
	}
	return []runtime.CreateOpt{runtime.WithStdio(inR, outW, errW)}, nil
}

// pump copies one output stream to the log and the attach clients until
// it ends (a pty reports EIO once its last slave closes: the end too).
func (s *server) pump(stream string, r *os.File) {
	s.pumps.Add(1)
	go func() {
		defer s.pumps.Done()
		defer r.Close()
		tee := io.TeeReader(r, writerFunc(func(p []byte) (int, error) {
			s.broadcast(stream, p)
			return len(p), nil
		}))
		if s.log == nil { // an exec's output is not logged
			_, _ = io.Copy(io.Discard, tee)
			return
		}
		_ = s.log.Copy(stream, tee)
	}()
}

// closeChildEnds closes our copies of the pipes' far ends: the process
// holds its own, and the output ends when it exits.
func (s *server) closeChildEnds() {
	for _, f := range s.childEnds {
		f.Close()
	}
	s.childEnds = nil
}

// pumpConsole makes a new pty master the process's stdin and pumps its
// output.
func (s *server) pumpConsole() error {
	if s.console == nil {
		return nil
	}
	s.mu.Lock()
	s.stdin = s.console
	s.mu.Unlock()
	if s.monitor {
		return nil
	}
	dup, err := unix.Dup(int(s.console.Fd()))
	if err != nil {
		return err
	}
	s.pump("stdout", os.NewFile(uintptr(dup), "pty"))
	return nil
}

// released waits for the daemon's go: one byte, or a hang-up for no.
func released(release *os.File) bool {
	var one [1]byte
	n, _ := release.Read(one[:])
	release.Close()
	return n == 1
}

// runExec runs a process in the running container: attach clients connect
// first, then it starts.
func (s *server) runExec(ctx context.Context, rt *runtime.Runtime, opts []runtime.CreateOpt, report func(status), release *os.File) (*Exit, error) {
	fail := func(err error) (*Exit, error) {
		s.closeChildEnds()
		s.pumps.Wait()
		return nil, err
	}
	c, err := rt.Load(s.cfg.ID)
	if err != nil {
		return fail(err)
	}
	report(status{})
	if !released(release) {
		return fail(fmt.Errorf("exec in %s was not started", s.cfg.ID))
	}
	proc, err := c.Exec(ctx, s.cfg.Exec, opts...)
	if err != nil {
		return fail(err)
	}
	s.closeChildEnds()
	if err := s.pumpConsole(); err != nil {
		_ = proc.Kill(unix.SIGKILL)
		return fail(err)
	}
	report(status{Started: true, Pid: proc.Pid()})
	if s.monitor {
		return nil, s.becomeMonitor(proc, nil) // returns only if that failed
	}
	code, err := proc.Wait(ctx)
	s.pumps.Wait()
	exit := &Exit{ExitCode: code, FinishedAt: time.Now().UTC()}
	if err != nil {
		exit.Error = err.Error()
	}
	return exit, nil
}

// finish tells waiters and attachers the container ended and gives
// attachers a moment to take the last output.
func (s *server) finish() {
	s.mu.Lock()
	for _, w := range s.waiters {
		w.conn.Close()
	}
	s.waiters = nil
	for a := range s.attachers {
		close(a.out)
	}
	s.attachers = nil
	if s.stdin != nil {
		s.stdin.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.drained.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	if s.ln != nil {
		s.ln.Close()
		// Only our own socket: once exit.json is written, the daemon may
		// have started the container again, with a new shim listening.
		path := filepath.Join(s.dir, socketFile)
		if fi, err := os.Stat(path); err == nil && s.sock != nil && os.SameFile(fi, s.sock) {
			os.Remove(path)
		}
	}
}

// request is the first line a client sends on the shim's socket.
type request struct {
	Attach *AttachOptions `json:"attach,omitempty"`
	Resize *Size          `json:"resize,omitempty"`
	// Wait: the shim closes the connection once the exit is recorded.
	Wait bool `json:"wait,omitempty"`
	// Record (with Wait): the client offers to record the end itself; see
	// AwaitEnd. A Go shim records it always and ignores the offer.
	Record bool `json:"record,omitempty"`
}

// AttachOptions say which streams an attach client wants.
type AttachOptions struct {
	Stdin  bool `json:"stdin,omitempty"`
	Stdout bool `json:"stdout,omitempty"`
	Stderr bool `json:"stderr,omitempty"`
}

// Size is a terminal's size.
type Size struct {
	Height uint16 `json:"height"`
	Width  uint16 `json:"width"`
}

func (s *server) serve() {
	defer s.serving.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.serving.Add(1)
		go func() {
			defer s.serving.Done()
			s.handle(conn)
		}()
	}
}

// requestTimeout bounds how long a client may take to send its request.
const requestTimeout = 2 * time.Second

// readRequest reads a client's first line and nothing of what follows it
// (an attach client's input): it peeks at what has come and reads up to
// the newline only, two system calls for a request, not one per byte.
func readRequest(conn net.Conn) (request, error) {
	var req request
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return req, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(requestTimeout))
	defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	var line []byte
	buf := make([]byte, maxRequest)
	for len(line) < maxRequest {
		var n int
		var perr error
		if err := raw.Read(func(fd uintptr) bool {
			n, _, perr = unix.Recvfrom(int(fd), buf[:maxRequest-len(line)], unix.MSG_PEEK)
			return perr != unix.EAGAIN
		}); err != nil {
			return req, err
		}
		if perr != nil {
			return req, perr
		}
		if n == 0 {
			return req, io.EOF
		}
		end := bytes.IndexByte(buf[:n], '\n')
		take := n
		if end >= 0 {
			take = end + 1
		}
		if _, err := io.ReadFull(conn, buf[:take]); err != nil {
			return req, err
		}
		line = append(line, buf[:take]...)
		if end >= 0 {
			return req, json.Unmarshal(line[:len(line)-1], &req)
		}
	}
	return req, errors.New("request too long")
}

// maxRequest bounds a request line.
const maxRequest = 1024

func (s *server) handle(conn net.Conn) {
	req, err := readRequest(conn)
	if err != nil {
		conn.Close()
		return
	}
	switch {
	case req.Wait:
		s.mu.Lock()
		if s.attachers == nil { // ended already
			conn.Close()
		} else {
			s.waiters = append(s.waiters, waiter{conn, req.Record})
		}
		s.mu.Unlock()
	case req.Resize != nil:
		s.mu.Lock()
		if s.console != nil {
			ws := &unix.Winsize{Row: req.Resize.Height, Col: req.Resize.Width}
			err = unix.IoctlSetWinsize(int(s.console.Fd()), unix.TIOCSWINSZ, ws)
		}
		s.mu.Unlock()
		if err != nil {
			fmt.Fprintf(conn, "%v\n", err)
		}
		conn.Close()
	case req.Attach != nil:
		s.attach(conn, *req.Attach)
	default:
		conn.Close()
	}
}

// attacher is one attach client. Output goes to it through a buffered
// channel, so that a slow client never holds up the container: one that
// falls behind by a full channel is dropped.
type attacher struct {
	conn                  net.Conn
	stdin, stdout, stderr bool
	out                   chan []byte
}

const (
	attachBacklog = 1024 // chunks a client may fall behind
	attachAck     = 0    // first byte to an attach client: registered
)

func (s *server) attach(conn net.Conn, o AttachOptions) {
	if s.monitor {
		// The monitor serves it; nothing is read or written before.
		if _, err := conn.Write([]byte{attachAck}); err != nil {
			conn.Close()
			return
		}
		s.mu.Lock()
		s.handed = append(s.handed, &attacher{conn: conn, stdin: o.Stdin, stdout: o.Stdout, stderr: o.Stderr})
		s.mu.Unlock()
		return
	}
	a := &attacher{conn: conn, stdout: o.Stdout, stderr: o.Stderr, out: make(chan []byte, attachBacklog)}
	s.mu.Lock()
	if s.attachers == nil {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.attachers[a] = struct{}{}
	s.drained.Add(1)
	in := s.stdin
	s.mu.Unlock()
	// The ack: from now on this client gets all output. The daemon waits
	// for it before the container may start.
	if _, err := conn.Write([]byte{attachAck}); err != nil {
		s.drop(a)
		s.drained.Done()
		return
	}
	go func() {
		defer s.drained.Done()
		defer conn.Close()
		for p := range a.out {
			if _, err := conn.Write(p); err != nil {
				s.drop(a)
				for range a.out {
				}
				return
			}
		}
	}()
	if o.Stdin && in != nil {
		go func() {
			_, _ = io.Copy(in, conn)
			// docker: StdinOnce closes a pipe's stdin when the first
			// attached stdin ends; a terminal's stays open.
			if s.cfg.StdinOnce && !s.cfg.Tty {
				in.Close()
			}
		}()
	}
}

func (s *server) drop(a *attacher) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.attachers[a]; ok {
		delete(s.attachers, a)
		close(a.out)
		a.conn.Close()
	}
}

// broadcast hands a chunk of output to every attacher of its stream:
// raw for a terminal, else in Docker's multiplexed frames.
func (s *server) broadcast(stream string, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.attachers) == 0 {
		return
	}
	var msg []byte
	if s.cfg.Tty {
		msg = append([]byte(nil), p...)
	} else {
		msg = make([]byte, 8+len(p))
		msg[0] = 1
		if stream == "stderr" {
			msg[0] = 2
		}
		binary.BigEndian.PutUint32(msg[4:8], uint32(len(p)))
		copy(msg[8:], p)
	}
	for a := range s.attachers {
		if (stream == "stdout" && !a.stdout) || (stream == "stderr" && !a.stderr) {
			continue
		}
		select {
		case a.out <- msg:
		default:
			delete(s.attachers, a)
			close(a.out)
			a.conn.Close()
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
