package runtime

import (
	"fmt"
	"io"
	"os"

	json "github.com/go-json-experiment/json/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The parent (Create) and the container init talk over a SOCK_SEQPACKET
// socketpair, one JSON message per packet; the pty master travels as
// SCM_RIGHTS with the "console" message. Init holds its end on fd 3 with
// O_CLOEXEC, so a successful execve() closes it and the parent reads EOF.
//
//	parent (Create)                               init (berthd __berth_init)
//	  re-exec sealed berthd, new namespaces   -->  lock OS thread
//	  make cgroup, write oom_score_adj
//	  initConfig + cgroup tasks fds ------------->  join cgroup (this thread: "0"
//	                                                to tasks; v2: parent adds pid),
//	                                                join ns paths, unshare cgroupns,
//	                                                prepare and attach mounts, devices
//	             <-------------------- hooks       (only if prestart/createRuntime)
//	  run prestart, createRuntime hooks
//	  hooksDone ---------------------------------->  createContainer hooks,
//	                                                pivot_root, masks, hostname,
//	                                                rlimits, look up the binary
//	             <--------------------- console     (with the pty master; terminal only)
//	             <------------------ ready | error
//	  write state.json, return "created"
//	                          ...
//	Start: write a byte into <state>/exec.fifo --->  read(exec.fifo) returns,
//	                                                startContainer hooks,
//	                                                no_new_privs, groups/gid/uid,
//	                                                capabilities, seccomp, execve
//	             <---------- error | EOF (execve closed the socket)
//
// Create may be one process and Start another (runc's command line): the
// exec fifo, not the socket, is what releases init.
const (
	msgConfig  = "config"
	msgConsole = "console"
	msgReady   = "ready"
	msgError   = "error"
	// msgHooks: init's mounts are made, the parent runs prestart and
	// createRuntime hooks and answers msgHooksDone (see hooks_linux.go).
	msgHooks     = "hooks"
	msgHooksDone = "hooksDone"
)

type syncMsg struct {
	Type   string      `json:"type"`
	Error  string      `json:"error,omitempty"`
	Config *initConfig `json:"config,omitempty"`
}

// initConfig is everything init needs; it is built by the parent.
type initConfig struct {
	ID         string      `json:"id"`
	Spec       *specs.Spec `json:"spec"`
	Rootfs     string      `json:"rootfs"`
	CgroupPath string      `json:"cgroupPath"`
	Seccomp    []byte      `json:"seccomp,omitempty"` // compiled BPF (see seccompProgram)
	// State is what init's hooks read on stdin ("creating", init's pid as
	// the host sees it).
	State *specs.State `json:"state,omitempty"`
	// Exec: a process entering a running container (see Container.Exec),
	// already in its namespaces and cgroup, with no rootfs to set up.
	Exec bool `json:"exec,omitempty"`
	// Handed: init is a spare (SpareInit), handed its exec fifo and these
	// stdio files at the end of this message's fds.
	Handed *handedStdio `json:"handed,omitempty"`
}

// maxMsgFds bounds the fds one sync message carries: a pty master, or one
// cgroup tasks file per v1 hierarchy.
const maxMsgFds = 32

// Fds inherited by init, in this order after stdio.
const (
	initSyncFd = 3 // socketpair end
	initFifoFd = 4 // <state>/exec.fifo, opened O_RDWR by the parent
)

func writeMsg(f *os.File, m syncMsg, fds ...int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(int(f.Fd()), b, oob, nil, 0)
}

// readMsg reads one packet; io.EOF when the peer closed its end.
func readMsg(f *os.File) (syncMsg, []int, error) {
	var m syncMsg
	fd := int(f.Fd())
	size, err := packetSize(fd)
	if err != nil || size == 0 {
		return m, nil, err
	}
	buf := make([]byte, size)
	oob := make([]byte, unix.CmsgSpace(4*maxMsgFds))
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return m, nil, fmt.Errorf("read sync socket: %w", err)
		}
		if n == 0 && oobn == 0 {
			return m, nil, io.EOF
		}
		fds, err := parseRights(oob[:oobn])
		if err != nil {
			return m, nil, err
		}
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			return m, fds, fmt.Errorf("decode sync message: %w", err)
		}
		return m, fds, nil
	}
}

// packetSize peeks at the next packet's length (MSG_TRUNC reports the whole
// length), so that reading a config costs a buffer of its size and not a
// fixed megabyte of page faults on each side of the socket. It returns
// io.EOF once the peer closed its end.
func packetSize(fd int) (int, error) {
	var one [1]byte
	for {
		n, _, _, _, err := unix.Recvmsg(fd, one[:], nil, unix.MSG_PEEK|unix.MSG_TRUNC)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, fmt.Errorf("read sync socket: %w", err)
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, cm := range msgs {
		r, err := unix.ParseUnixRights(&cm)
		if err != nil {
			return nil, err
		}
		fds = append(fds, r...)
	}
	return fds, nil
}

func socketPair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "sync-parent"), os.NewFile(uintptr(fds[1]), "sync-init"), nil
}
