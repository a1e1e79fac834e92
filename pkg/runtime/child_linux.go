package runtime

import (
	"os/exec"
	"sync"

	"golang.org/x/sys/unix"
)

// child is a process this runtime started (a container's init, an exec's
// process) and reaps, unless it is handed over: a caller about to execve
// another program (berth's shim becoming berth-monitor) leaves the exit to
// that program, which stays the child's parent.
type child struct {
	cmd      *exec.Cmd
	done     chan struct{} // closed once reaped
	exitCode int           // set before done is closed

	mu         sync.Mutex
	handedOver bool
}

// watch reaps cmd, started already, once it ends.
func watch(cmd *exec.Cmd) *child {
	ch := &child{cmd: cmd, done: make(chan struct{})}
	go ch.reap()
	return ch
}

// reap first only observes the exit (WNOWAIT), so that the choice to reap
// is made under mu, against a concurrent handOver.
func (ch *child) reap() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, ch.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.handedOver {
		return
	}
	ch.exitCode = 255 // Wait failed before the process could be waited for
	_ = ch.cmd.Wait()
	if ch.cmd.ProcessState != nil {
		ch.exitCode = exitCode(ch.cmd.ProcessState)
	}
	close(ch.done)
}

// handOver stops the reaping. If the child had ended and was reaped
// already, exited is true and code is its exit code.
func (ch *child) handOver() (code int, exited bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	select {
	case <-ch.done:
		return ch.exitCode, true
	default:
		ch.handedOver = true
		return 0, false
	}
}
