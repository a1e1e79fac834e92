package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/internal/atomicfile"
)

// Arg is argv[1] of the shim re-exec; never a user verb.
const Arg = "__berth_shim"

// Config is what the daemon tells a shim, in DIR/shim.json.
type Config struct {
	ID          string `json:"id"`
	Bundle      string `json:"bundle"`
	RuntimeRoot string `json:"runtimeRoot"`
	LogPath     string `json:"logPath"`
	LogMaxSize  int64  `json:"logMaxSize,omitempty"`
	LogMaxFiles int    `json:"logMaxFiles,omitempty"`
	// Tty: the spec asks for a terminal; the shim holds its pty master.
	Tty bool `json:"tty,omitempty"`
	// OpenStdin gives the container a stdin pipe that attach feeds;
	// StdinOnce closes it when the first attached stdin ends.
	OpenStdin bool `json:"openStdin,omitempty"`
	StdinOnce bool `json:"stdinOnce,omitempty"`
	// Unmount is unmounted once the container ended (its root filesystem).
	Unmount string `json:"unmount,omitempty"`
	// Exec, when set, is a process to run in the running container ID
	// instead of the container itself; its output is not logged (LogPath
	// empty) and its exit goes to DIR/exit.json as a container's does.
	Exec *specs.Process `json:"exec,omitempty"`
}

// Exit is a finished container's status, in DIR/exit.json.
type Exit struct {
	ExitCode   int       `json:"exitCode"`
	OOMKilled  bool      `json:"oomKilled"`
	FinishedAt time.Time `json:"finishedAt"`
	Error      string    `json:"error,omitempty"`
}

const (
	configFile = "shim.json"
	exitFile   = "exit.json"
	socketFile = "shim.sock"
	statusFd   = 3 // shim -> daemon: JSON status lines
	goFd       = 4 // daemon -> shim: one byte lets the container start
)

// status is one line on the status pipe: first after the runtime's create
// (Pid or Error), then after its start (Started or Error).
type status struct {
	Pid     int    `json:"pid,omitempty"`
	Started bool   `json:"started,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Launch is a shim whose container is created but not yet started, so that
// attach clients can connect before it writes anything.
type Launch struct {
	pid        int
	status     *json.Decoder
	r, release *os.File
}

// Create launches the shim for the container described by cfg, with its
// files in dir, and returns once the runtime created the container (or
// failed to: its error). exe is berthd's binary. Call Start or Abort.
func Create(exe, dir string, cfg Config) (*Launch, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(dir, configFile), func(w io.Writer) error { _, err := w.Write(b); return err }); err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(dir, exitFile))
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	goR, goW, err := os.Pipe()
	if err != nil {
		statusR.Close()
		statusW.Close()
		return nil, err
	}
	cmd := exec.Command(exe, Arg, dir)
	cmd.ExtraFiles = []*os.File{statusW, goR}
	// Its own session: the shim and the container live on when berthd
	// stops, and a terminal's signals to berthd do not reach them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	err = cmd.Start()
	statusW.Close()
	goR.Close()
	if err != nil {
		statusR.Close()
		goW.Close()
		return nil, fmt.Errorf("start shim: %w", err)
	}
	// Reap the shim when it ends; berthd learns the container's end from
	// the shim's socket and exit.json, not from this.
	go func() { _ = cmd.Wait() }()
	l := &Launch{status: json.NewDecoder(statusR), r: statusR, release: goW}
	var st status
	if err := l.status.Decode(&st); err != nil {
		l.close()
		return nil, fmt.Errorf("shim for %s died before reporting: %w", cfg.ID, err)
	}
	if st.Error != "" {
		l.close()
		return nil, errors.New(st.Error)
	}
	l.pid = st.Pid
	return l, nil
}

// Pid is the container's process.
func (l *Launch) Pid() int { return l.pid }

// Start lets the container's process run and returns once it does.
func (l *Launch) Start() error {
	defer l.close()
	if _, err := l.release.Write([]byte{1}); err != nil {
		return fmt.Errorf("start: shim gone: %w", err)
	}
	var st status
	if err := l.status.Decode(&st); err != nil {
		return fmt.Errorf("start: shim died before reporting: %w", err)
	}
	if st.Error != "" {
		return errors.New(st.Error)
	}
	if st.Pid != 0 { // an exec's process exists only now
		l.pid = st.Pid
	}
	return nil
}

// Abort tells the shim not to start the container: it deletes it and ends.
func (l *Launch) Abort() { l.close() }

func (l *Launch) close() {
	l.r.Close()
	l.release.Close()
}

// Start creates and starts the container through a new shim, and returns
// the container's pid.
func Start(exe, dir string, cfg Config) (int, error) {
	l, err := Create(exe, dir, cfg)
	if err != nil {
		return 0, err
	}
	return l.pid, l.Start()
}

// ReadExit returns the recorded exit of the container in dir, or an
// os.ErrNotExist error while it runs.
func ReadExit(dir string) (*Exit, error) {
	b, err := os.ReadFile(filepath.Join(dir, exitFile))
	if err != nil {
		return nil, err
	}
	var e Exit
	return &e, json.Unmarshal(b, &e)
}
