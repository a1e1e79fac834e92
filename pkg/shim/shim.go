package shim

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/internal/atomicfile"
)

// Arg is argv[1] of the shim re-exec; never a user verb.
const Arg = "__berth_shim"

// ExitArg is argv[1] of "berthd __berth_shim_exit DIR CODE [ERROR]", which
// berth-monitor runs once the container it watches ended: see RecordEnd.
const ExitArg = "__berth_shim_exit"

// MonitorName is berth-monitor's file name, looked for beside berthd.
const MonitorName = "berth-monitor"

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
	// Monitor is berth-monitor's path: once the container (or the exec's
	// process) runs, the shim becomes that small C program (execve), which
	// watches it from then on in a fraction of a Go shim's memory. Empty,
	// the shim watches it itself.
	Monitor string `json:"monitor,omitempty"`
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
	dirFd      = 5 // daemon -> shim: the container's directory, one line
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
	after      func() // once the launch is over
}

// Launcher starts shims, keeping one started ahead, idle until it is
// given a container: a shim's own start (a Go process, some milliseconds)
// is then off the path of a container's start.
type Launcher struct {
	exe       string
	monitor   string // berth-monitor, or "" when berthd has none beside it
	keepSpare bool
	mu        sync.Mutex
	spare     *idleShim
}

// idleShim is a started shim waiting for its directory on fd 5.
type idleShim struct {
	cmd              *exec.Cmd
	statusR, release *os.File
	dirW             *os.File
	exited           chan struct{} // closed once reaped
}

// stop ends an idle shim (it exits at EOF on fd 5).
func (p *idleShim) stop() {
	p.dirW.Close()
	p.statusR.Close()
	p.release.Close()
}

// NewLauncher returns a launcher of exe's shims (exe is berthd's binary).
func NewLauncher(exe string) *Launcher {
	return &Launcher{exe: exe, monitor: FindMonitor(exe), keepSpare: true}
}

// FindMonitor returns the berth-monitor installed beside exe (berthd), or
// "" if there is none: shims then watch their containers themselves.
func FindMonitor(exe string) string {
	p := filepath.Join(filepath.Dir(exe), MonitorName)
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return ""
	}
	return p
}

// Monitor is the berth-monitor the launcher's shims become, or "".
func (l *Launcher) Monitor() string { return l.monitor }

func startIdle(exe string) (*idleShim, error) {
	var files [6]*os.File // statusR, statusW, goR, goW, dirR, dirW
	for i := 0; i < 6; i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			for _, f := range files[:i] {
				f.Close()
			}
			return nil, err
		}
		files[i], files[i+1] = r, w
	}
	cmd := exec.Command(exe, Arg, "-")
	cmd.ExtraFiles = []*os.File{files[1], files[2], files[4]}
	// Its own session: the shim and the container live on when berthd
	// stops, and a terminal's signals to berthd do not reach them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	err := cmd.Start()
	files[1].Close()
	files[2].Close()
	files[4].Close()
	if err != nil {
		files[0].Close()
		files[3].Close()
		files[5].Close()
		return nil, fmt.Errorf("start shim: %w", err)
	}
	// Reap the shim when it ends; berthd learns the container's end from
	// the shim's socket and exit.json, not from this.
	p := &idleShim{cmd: cmd, statusR: files[0], release: files[3], dirW: files[5], exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// Create hands the container described by cfg, with its files in dir, to
// a shim and returns once the runtime created the container (or failed
// to: its error). Call Start or Abort.
func (l *Launcher) Create(dir string, cfg Config) (*Launch, error) {
	cfg.Monitor = l.monitor
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(dir, configFile), func(w io.Writer) error { _, err := w.Write(b); return err }); err != nil {
		return nil, err
	}
	os.Remove(filepath.Join(dir, exitFile))
	l.mu.Lock()
	p, keepSpare := l.spare, l.keepSpare
	l.spare = nil
	l.mu.Unlock()
	if p == nil {
		if p, err = startIdle(l.exe); err != nil {
			return nil, err
		}
	}
	_, err = io.WriteString(p.dirW, dir+"\n")
	p.dirW.Close()
	launch := &Launch{status: json.NewDecoder(p.statusR), r: p.statusR, release: p.release}
	if keepSpare {
		// The next spare starts once this container runs (or failed):
		// on two cores it would otherwise compete with its start.
		launch.after = func() { go l.refill() }
	}
	if err != nil {
		launch.close()
		return nil, fmt.Errorf("shim for %s: %w", cfg.ID, err)
	}
	var st status
	if err := launch.status.Decode(&st); err != nil {
		launch.close()
		return nil, fmt.Errorf("shim for %s died before reporting: %w", cfg.ID, err)
	}
	if st.Error != "" {
		launch.close()
		return nil, errors.New(st.Error)
	}
	launch.pid = st.Pid
	return launch, nil
}

// refill starts the next spare shim.
func (l *Launcher) refill() {
	p, err := startIdle(l.exe)
	if err != nil {
		return // the next Create starts one itself, and reports why
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.spare != nil || !l.keepSpare {
		p.stop()
		return
	}
	l.spare = p
}

// Close ends the idle shim and waits for it, so that none outlives
// berthd; shims with a container go on.
func (l *Launcher) Close() {
	l.mu.Lock()
	p := l.spare
	l.spare, l.keepSpare = nil, false
	l.mu.Unlock()
	if p != nil {
		p.stop()
		<-p.exited
	}
}

// Create launches one shim, keeping none ahead, for the container
// described by cfg; exe is berthd's binary.
func Create(exe, dir string, cfg Config) (*Launch, error) {
	return (&Launcher{exe: exe, monitor: FindMonitor(exe)}).Create(dir, cfg)
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
	if l.after != nil {
		l.after()
		l.after = nil
	}
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

// StartedAt is when the container in dir was last started (its shim's
// config was written), or zero if it never was.
func StartedAt(dir string) time.Time {
	fi, err := os.Stat(filepath.Join(dir, configFile))
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime().UTC()
}

// Forget removes what a start that failed before the container was created
// left in dir, so that the container reads as never started.
func Forget(dir string) {
	os.Remove(filepath.Join(dir, configFile))
	os.Remove(filepath.Join(dir, exitFile))
}

// readDir waits for the directory an idle shim is given ("" when the
// daemon went away first).
func readDir() string {
	f := os.NewFile(dirFd, "dir")
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	return strings.TrimSuffix(line, "\n")
}

// readConfig reads the shim's config, DIR/shim.json.
func readConfig(dir string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", configFile, err)
	}
	return cfg, nil
}

// RecordExit writes exit.json for a container whose shim is gone without
// writing it, so that its state stays "exited" with what is known.
func RecordExit(dir string, e Exit) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, exitFile), func(w io.Writer) error { _, err := w.Write(b); return err })
}
