package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/berth-containers/berth/internal/atomicfile"
	"github.com/berth-containers/berth/pkg/logs"
	"github.com/berth-containers/berth/pkg/runtime"
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
	statusFd   = 3
)

type status struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// Start launches the shim for the container described by cfg, with its
// files in dir, and returns once the container runs (its pid) or failed to
// start (the runtime's error). exe is berthd's binary.
func Start(exe, dir string, cfg Config) (int, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return 0, err
	}
	if err := atomicfile.Write(filepath.Join(dir, configFile), func(w io.Writer) error { _, err := w.Write(b); return err }); err != nil {
		return 0, err
	}
	os.Remove(filepath.Join(dir, exitFile))
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd := exec.Command(exe, Arg, dir)
	cmd.ExtraFiles = []*os.File{w}
	// Its own session: the shim and the container live on when berthd
	// stops, and a terminal's signals to berthd do not reach them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		w.Close()
		return 0, fmt.Errorf("start shim: %w", err)
	}
	w.Close()
	// Reap the shim when it ends; berthd learns the container's end from
	// exit.json, not from this.
	go func() { _ = cmd.Wait() }()
	var st status
	if err := json.NewDecoder(r).Decode(&st); err != nil {
		return 0, fmt.Errorf("shim for %s died before reporting: %w", cfg.ID, err)
	}
	if st.Error != "" {
		return 0, errors.New(st.Error)
	}
	return st.Pid, nil
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

// Run is the shim's main: it never returns an error to a caller that
// could show it, so it reports on the status pipe or in exit.json.
func Run(dir string) int {
	statusW := os.NewFile(statusFd, "status")
	report := func(st status) {
		if statusW != nil {
			_ = json.NewEncoder(statusW).Encode(st)
			statusW.Close()
			statusW = nil
		}
	}
	exit, err := run(dir, func(pid int) { report(status{Pid: pid}) })
	if err != nil {
		report(status{Error: err.Error()})
		exit = &Exit{ExitCode: 255, Error: err.Error(), FinishedAt: time.Now().UTC()}
	}
	b, _ := json.Marshal(exit)
	if werr := atomicfile.Write(filepath.Join(dir, exitFile), func(w io.Writer) error { _, err := w.Write(b); return err }); werr != nil {
		return 1
	}
	return 0
}

func run(dir string, started func(pid int)) (*Exit, error) {
	b, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", configFile, err)
	}
	rt, err := runtime.New(cfg.RuntimeRoot)
	if err != nil {
		return nil, err
	}
	log, err := logs.Open(cfg.LogPath, cfg.LogMaxSize, cfg.LogMaxFiles)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	var copiers sync.WaitGroup
	for stream, r := range map[string]*os.File{"stdout": outR, "stderr": errR} {
		copiers.Add(1)
		go func() {
			defer copiers.Done()
			defer r.Close()
			_ = log.Copy(stream, r)
		}()
	}
	ctx := context.Background()
	c, err := rt.Create(ctx, cfg.ID, cfg.Bundle, runtime.WithStdio(nil, outW, errW))
	// The container holds its own copies; the log ends when it exits.
	outW.Close()
	errW.Close()
	if err != nil {
		copiers.Wait()
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		_ = c.Delete(ctx, true)
		copiers.Wait()
		return nil, err
	}
	started(c.Pid())
	code, err := c.Wait(ctx)
	copiers.Wait()
	exit := &Exit{ExitCode: code, FinishedAt: time.Now().UTC()}
	if st, serr := c.State(); serr == nil {
		exit.OOMKilled = st.OOMKilled
	}
	if err != nil {
		exit.Error = err.Error()
	}
	if err := c.Delete(ctx, true); err != nil && exit.Error == "" {
		exit.Error = "delete: " + err.Error()
	}
	return exit, nil
}
