package shim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/cgroups"
	"github.com/berth-containers/berth/pkg/runtime"
)

// becomeMonitor hands the running container to berth-monitor
// (cmd/monitor): the shim execve()s it, so that it keeps the shim's pid,
// stays the container's parent and inherits the socket, the container's
// stdio and the clients registered so far. With syncSock (from
// runtime.Container.Release), the container is released but maybe not yet
// running: the monitor reads the start's outcome there and reports it on
// the status pipe. It returns only on failure, once the container was
// killed: a container that nothing watches would have no log and no
// recorded exit.
func (s *server) becomeMonitor(c handed, syncSock *os.File) error {
	exe, err := os.Executable()
	if err != nil {
		return s.killHanded(c, err)
	}
	// The listener's socket stays open in lf: connections made from now
	// on wait in its backlog for the monitor.
	lf, err := s.ln.(*net.UnixListener).File()
	if err != nil {
		return s.killHanded(c, err)
	}
	s.ln.Close()
	s.serving.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()

	args := []string{MonitorName, "dir=" + s.dir, "exe=" + exe}
	keep := []*os.File{lf}
	arg := func(key string, f *os.File, suffix string) {
		keep = append(keep, f)
		args = append(args, fmt.Sprintf("%s=%d%s", key, f.Fd(), suffix))
	}
	arg("listen", lf, "")
	for _, o := range s.outputs {
		arg(o.stream, o.f, "")
	}
	if s.console != nil {
		arg("stdout", s.console, "")
	}
	if f, ok := s.stdin.(*os.File); ok && f != nil {
		arg("stdin", f, "")
	}
	for _, a := range s.handed {
		f, err := a.conn.(*net.UnixConn).File()
		if err != nil {
			continue // gone: nothing to hand over
		}
		flags := ":"
		for _, w := range []struct {
			on bool
			c  string
		}{{a.stdin, "i"}, {a.stdout, "o"}, {a.stderr, "e"}} {
			if w.on {
				flags += w.c
			}
		}
		arg("attach", f, flags)
	}
	for _, w := range s.waiters {
		if f, err := w.conn.(*net.UnixConn).File(); err == nil {
			flags := ""
			if w.record {
				flags = ":r"
			}
			arg("wait", f, flags)
		}
	}
	if s.cfg.LogPath != "" {
		args = append(args, "log="+s.cfg.LogPath,
			"log-max-size="+strconv.FormatInt(s.cfg.LogMaxSize, 10),
			"log-max-files="+strconv.Itoa(s.cfg.LogMaxFiles))
	}
	if s.cfg.Tty {
		args = append(args, "tty=1")
	}
	if s.cfg.StdinOnce {
		args = append(args, "stdin-once=1")
	}
	if ctr, ok := c.(*runtime.Container); ok {
		// The monitor records the end itself while berthd watches.
		args = append(args, "oom="+cgroups.OOMFile(ctr.CgroupPath()))
	}
	if syncSock != nil {
		// The start's outcome is the monitor's to read and report.
		arg("sync", syncSock, "")
		if _, err := unix.FcntlInt(statusFd, unix.F_SETFD, 0); err != nil {
			return s.killHanded(c, err)
		}
		args = append(args, "status="+strconv.Itoa(statusFd))
	} else {
		unix.CloseOnExec(statusFd) // the daemon has what it needed from the status pipe
	}
	for _, f := range keep {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
			return s.killHanded(c, err)
		}
	}
	// From here on init is the monitor's to reap.
	if code, exited := c.HandOver(); exited {
		args = append(args, "exited="+strconv.Itoa(code))
	} else {
		args = append(args, "pid="+strconv.Itoa(c.Pid()))
	}
	err = unix.Exec(s.cfg.Monitor, args, os.Environ())
	return s.killHanded(c, fmt.Errorf("start %s: %w", s.cfg.Monitor, err))
}

// handed is what the monitor takes over: a container's init
// (*runtime.Container) or an exec's process (*runtime.Process).
type handed interface {
	Pid() int
	HandOver() (code int, exited bool)
}

// killHanded ends a process the monitor could not take over.
func (s *server) killHanded(c handed, cause error) error {
	_ = unix.Kill(c.Pid(), unix.SIGKILL)
	var ws unix.WaitStatus
	_, _ = unix.Wait4(c.Pid(), &ws, 0, nil)
	return fmt.Errorf("container %s killed: no monitor: %w", s.cfg.ID, cause)
}

// RecordEnd is "berthd __berth_shim_exit DIR CODE [ERROR]", berth-monitor's
// last step once the container it watched ended and its output was
// drained: it deletes the container's cgroup and state, unmounts its root
// filesystem, then writes DIR/exit.json, the order a Go shim keeps (once
// exit.json is there, the daemon may start the container again). An
// exec's end is only written down. ERROR, a JSON string, is why the
// container did not start (init's message).
func RecordEnd(dir string, code int, startErr ...string) int {
	var msg string
	if len(startErr) > 0 {
		if err := json.Unmarshal([]byte(startErr[0]), &msg); err != nil {
			msg = startErr[0]
		}
	}
	return recordEnd(dir, code, true, msg)
}

// recordEnd is RecordEnd. With release false it only records the exit,
// and leaves the container's runtime state, cgroup and root filesystem to
// a caller that releases them later itself (AwaitEnd's, berthd).
func recordEnd(dir string, code int, release bool, startErr string) int {
	exit := &Exit{ExitCode: code, Error: startErr}
	if err := deleteEnded(dir, exit, release); err != nil && exit.Error == "" {
		exit.Error = err.Error()
	}
	exit.FinishedAt = time.Now().UTC()
	if err := RecordExit(dir, *exit); err != nil {
		fmt.Fprintln(os.Stderr, "berthd:", err)
		return 1
	}
	return 0
}

// deleteEnded notes in exit whether the OOM killer ended the container,
// and with release deletes its runtime state and cgroup and unmounts its
// root filesystem.
func deleteEnded(dir string, exit *Exit, release bool) error {
	cfg, err := readConfig(dir)
	if err != nil {
		return err
	}
	if cfg.Exec != nil {
		return nil // the container goes on
	}
	defer func() {
		if release && cfg.Unmount != "" {
			_ = unix.Unmount(cfg.Unmount, unix.MNT_DETACH)
		}
	}()
	rt, err := runtime.New(cfg.RuntimeRoot)
	if err != nil {
		return err
	}
	c, err := rt.Load(cfg.ID)
	if errors.Is(err, runtime.ErrNotFound) {
		return nil // deleted already: a second recording (see AwaitEnd)
	}
	if err != nil {
		return err
	}
	if st, err := c.State(); err == nil {
		exit.OOMKilled = st.OOMKilled
	}
	if !release {
		return nil
	}
	return c.Delete(context.Background(), true)
}

// AwaitEnd waits on a connection from Watch until the container's exit is
// recorded. Its offer to record tells berth-monitor that berthd watches:
// the monitor then writes exit.json itself (the exit code, the OOM kill
// count of the container's cgroup) and closes the connection, as a Go
// shim does once it recorded the end; the container's runtime state, its
// cgroup (an rmdir in every hierarchy, 1 to 3 ms) and its root
// filesystem's mount (an unmount waits for an RCU grace period, 1 to 2 ms)
// stay, off the path of the exit's report. The caller releases them, under
// the container's lock, before it could start again. With no berthd
// watching, the monitor runs "berthd __berth_shim_exit", which does all.
//
// A monitor of an earlier release asks instead: {"exitCode":N}, answered
// with one byte once AwaitEnd wrote exit.json (only exit.json, as above).
func AwaitEnd(conn net.Conn, dir string) {
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return // closed: recorded by the shim
	}
	var end struct {
		ExitCode *int `json:"exitCode"`
	}
	if json.Unmarshal(line, &end) != nil || end.ExitCode == nil {
		return
	}
	if recordEnd(dir, *end.ExitCode, false, "") == 0 {
		_, _ = conn.Write([]byte{recordedAck})
	}
	_, _ = io.Copy(io.Discard, conn) // until the monitor is done
}

// recordedAck tells berth-monitor that its watcher recorded the end.
const recordedAck = 1
