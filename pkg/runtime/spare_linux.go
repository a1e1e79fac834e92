package runtime

import (
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// SpareInit is a container init started ahead, in new pid, uts, ipc and
// network namespaces, that waits for a container. Create (WithSpareInit)
// hands it one whose spec fits: it then sends the spare its config with
// the container's stdio and exec fifo, and the init's clone and Go start
// (3 ms or so) are off the container's path. berth's shims keep one while
// they wait for their container.
//
// A spare has no mount namespace of its own until it gets its container:
// one cloned ahead would be a copy of the host's mount table as it was
// then, without the root filesystem and netns mounts made since. The
// spare's init unshares it (on its one thread) once the config comes.
type SpareInit struct {
	init *child
	sock *os.File
}

// spareArg follows InitArg in a spare's arguments.
const spareArg = "spare"

// spareNamespaces are the namespaces a spare is made in: Docker's
// container's, but the mount namespace (see SpareInit).
var spareNamespaces = []specs.LinuxNamespaceType{
	specs.PIDNamespace, specs.UTSNamespace, specs.IPCNamespace, specs.NetworkNamespace,
}

// StartSpareInit starts a spare init. It ends (at EOF on its socket) with
// Close or with the process that started it.
func StartSpareInit() (*SpareInit, error) {
	exe, err := sealedExe()
	if err != nil {
		return nil, err
	}
	parent, child, err := socketPair()
	if err != nil {
		return nil, err
	}
	var flags uintptr
	for _, t := range spareNamespaces {
		flags |= namespaceFlags[t]
	}
	cmd := initCmd(exe, flags, child)
	cmd.Args = append(cmd.Args, spareArg)
	err = cmd.Start()
	child.Close()
	if err != nil {
		parent.Close()
		return nil, fmt.Errorf("start spare init: %w", err)
	}
	return &SpareInit{init: watch(cmd), sock: parent}, nil
}

// Pid is the spare's process.
func (s *SpareInit) Pid() int { return s.init.cmd.Process.Pid }

// Close ends an unused spare and reaps it.
func (s *SpareInit) Close() {
	s.sock.Close()
	<-s.init.done
}

// fits reports whether spec's container can have the spare: it asks for
// a new mount namespace, and for each of the spare's namespaces, new or,
// for those a thread can join later (network, ipc, uts), by path; for no
// other new one (the cgroup namespace init makes itself).
func (s *SpareInit) fits(spec *specs.Spec) bool {
	has := func(t specs.LinuxNamespaceType, joinable bool) bool {
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type == t {
				return ns.Path == "" || joinable
			}
		}
		return false
	}
	if !has(specs.MountNamespace, false) || hasNamespace(spec, specs.UserNamespace) {
		return false
	}
	for _, t := range spareNamespaces {
		if !has(t, joinableNamespaces[t]) {
			return false
		}
	}
	return true
}

// handOver gives the spare to c: c's init from now on. The returned fds
// (the exec fifo, then the stdio files given) go with the config, which
// says which stdio they are (handedStdio).
func (s *SpareInit) handOver(c *Container, o *createOptions, fifo *os.File) ([]int, *handedStdio) {
	c.init, c.syncSock = s.init, s.sock
	fds := []int{int(fifo.Fd())}
	h := &handedStdio{}
	for _, f := range []struct {
		file *os.File
		set  *bool
	}{{o.stdin, &h.Stdin}, {o.stdout, &h.Stdout}, {o.stderr, &h.Stderr}} {
		if f.file != nil {
			fds = append(fds, int(f.file.Fd()))
			*f.set = true
		}
	}
	return fds, h
}

// handedStdio says which stdio files a spare init receives with its
// config, after the exec fifo, at the end of the message's fds.
type handedStdio struct {
	Stdin  bool `json:"stdin,omitempty"`
	Stdout bool `json:"stdout,omitempty"`
	Stderr bool `json:"stderr,omitempty"`
}

// takeHanded, in a spare init, makes the mount namespace the spare lacks,
// puts the exec fifo and the stdio it was handed in their places, and
// returns the message's other fds.
func takeHanded(h *handedStdio, fds []int) ([]int, error) {
	// This thread's alone (unsharing the mount namespace unshares the
	// filesystem context too); init runs on it and execs from it.
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return nil, stage("unshare mount namespace", err)
	}
	targets := []int{initFifoFd}
	for _, s := range []struct {
		on bool
		fd int
	}{{h.Stdin, 0}, {h.Stdout, 1}, {h.Stderr, 2}} {
		if s.on {
			targets = append(targets, s.fd)
		}
	}
	if len(fds) < len(targets) {
		return nil, fmt.Errorf("sync: %d fds for %d handed files", len(fds), len(targets))
	}
	handed := fds[len(fds)-len(targets):]
	for i, fd := range handed {
		if err := unix.Dup3(fd, targets[i], 0); err != nil {
			return nil, stage("take handed files", err)
		}
		unix.Close(fd)
	}
	return fds[:len(fds)-len(targets)], nil
}
