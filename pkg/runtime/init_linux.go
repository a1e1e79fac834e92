package runtime

import (
	"errors"
	"fmt"
	"os"
	"path"
	goruntime "runtime"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/cgroups"
)

// InitArg is argv[1] of the container init re-exec; never a user verb.
const InitArg = "__berth_init"

// IsInit reports whether this process is a container init.
func IsInit() bool { return len(os.Args) > 1 && os.Args[1] == InitArg }

func init() {
	if IsInit() {
		// Namespaces, credentials, capabilities and seccomp set by init are
		// per thread; everything happens on, and execve() is called from,
		// the main thread.
		goruntime.GOMAXPROCS(1)
		goruntime.LockOSThread()
	}
}

// Init is the container init. It never returns: it execs the container's
// process or exits after reporting the error to its parent.
func Init() {
	sock := os.NewFile(initSyncFd, "sync")
	err := runInit(sock)
	msg := "container init: " + err.Error()
	if werr := writeMsg(sock, syncMsg{Type: msgError, Error: msg}); werr != nil {
		fmt.Fprintln(os.Stderr, "berth:", msg)
	}
	os.Exit(127)
}

// stage wraps an init error with the step that failed.
func stage(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", name, err)
}

func runInit(sock *os.File) error {
	if len(os.Args) > 2 && os.Args[2] == spareArg {
		WarmJSON() // while it waits for a container
	}
	m, cgroupFds, err := readMsg(sock)
	if err != nil {
		return err
	}
	if m.Type != msgConfig || m.Config == nil {
		return fmt.Errorf("sync: got %q, want config", m.Type)
	}
	if m.Config.Exec {
		return runExecInit(sock, m.Config)
	}
	if m.Config.Handed != nil {
		if cgroupFds, err = takeHanded(m.Config.Handed, cgroupFds); err != nil {
			return err
		}
	}
	// This thread execs the container process later, which so starts in
	// the cgroup; the other runtime threads die at execve.
	err = cgroups.JoinSelf(cgroupFds)
	for _, fd := range cgroupFds {
		unix.Close(fd)
	}
	if err != nil {
		return stage("cgroup "+m.Config.CgroupPath, err)
	}
	cfg := m.Config
	spec := cfg.Spec
	// Not dumpable: container processes cannot ptrace init or open its
	// /proc files (fds, exe) while it still holds host resources.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return stage("prctl dumpable", err)
	}
	if err := joinNamespaces(spec); err != nil {
		return err
	}
	if err := setupRootfs(sock, cfg); err != nil {
		return err
	}
	if err := setupIdentity(spec); err != nil {
		return err
	}
	exe, err := prepareProcess(sock, spec)
	if err != nil {
		return err
	}
	if err := writeMsg(sock, syncMsg{Type: msgReady}); err != nil {
		return err
	}
	if err := waitForStart(); err != nil {
		return err
	}
	if spec.Hooks != nil {
		st := *cfg.State
		st.Status = specs.StateRunning
		if err := runHooks("startContainer", spec.Hooks.StartContainer, &st); err != nil {
			return err
		}
	}
	if err := finalize(spec, cfg.Seccomp); err != nil {
		return err
	}
	// Nothing of the host may pass execve() (CVE-2024-21626): mark every
	// fd above stdio close-on-exec, whoever opened it.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return stage("close fds", err)
	}
	return stage("exec "+spec.Process.Args[0], unix.Exec(exe, spec.Process.Args, spec.Process.Env))
}

// prepareProcess sets the process's rlimits and terminal and finds its
// binary: what a container's init and an exec have in common before the
// credentials drop.
func prepareProcess(sock *os.File, spec *specs.Spec) (string, error) {
	if err := stage("set rlimits", setRlimits(spec.Process.Rlimits)); err != nil {
		return "", err
	}
	if spec.Process.Terminal {
		if err := stage("set up console", setupConsole(sock, spec.Process.ConsoleSize)); err != nil {
			return "", err
		}
	}
	return lookPath(spec.Process)
}

// runExecInit sets up a process entering a running container and execs
// it: it already is in the container's namespaces and cgroup.
func runExecInit(sock *os.File, cfg *initConfig) error {
	spec := cfg.Spec
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return stage("prctl dumpable", err)
	}
	exe, err := prepareProcess(sock, spec)
	if err != nil {
		return err
	}
	if err := finalize(spec, cfg.Seccomp); err != nil {
		return err
	}
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return stage("close fds", err)
	}
	// Ready last: an error before execve still reaches the caller, which
	// reads until ready or the socket closes at execve.
	if err := writeMsg(sock, syncMsg{Type: msgReady}); err != nil {
		return err
	}
	return stage("exec "+spec.Process.Args[0], unix.Exec(exe, spec.Process.Args, spec.Process.Env))
}

// joinNamespaces enters namespaces given by path and unshares the cgroup
// namespace, now that init is in its cgroup.
func joinNamespaces(spec *specs.Spec) error {
	for _, ns := range spec.Linux.Namespaces {
		switch {
		case ns.Path != "":
			if err := setns(ns.Path, int(namespaceFlags[ns.Type])); err != nil {
				return stage(fmt.Sprintf("join %s namespace %s", ns.Type, ns.Path), err)
			}
		case ns.Type == specs.CgroupNamespace:
			if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
				return stage("unshare cgroup namespace", err)
			}
		}
	}
	return nil
}

func setns(path string, nstype int) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Setns(fd, nstype)
}

func setupIdentity(spec *specs.Spec) error {
	if hasNamespace(spec, specs.UTSNamespace) {
		if spec.Hostname != "" {
			if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
				return stage("set hostname", err)
			}
		}
		if spec.Domainname != "" {
			if err := unix.Setdomainname([]byte(spec.Domainname)); err != nil {
				return stage("set domainname", err)
			}
		}
	}
	for k, v := range spec.Linux.Sysctl {
		p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
		if err := os.WriteFile(p, []byte(v), 0); err != nil {
			return stage("set sysctl "+k, err)
		}
	}
	return nil
}

// waitForStart blocks reading the exec fifo (inherited from the parent,
// so no path is resolved and the state dir's permissions do not matter in a
// user namespace) until Start writes to it.
func waitForStart() error {
	buf := make([]byte, 1)
	for {
		_, err := unix.Read(initFifoFd, buf)
		if err == unix.EINTR {
			continue
		}
		unix.Close(initFifoFd)
		return stage("read exec fifo", err)
	}
}

// lookPath finds args[0] in the container, with the container's PATH, so a
// missing binary fails Create rather than the process after Start.
// It runs before the chdir to the process's cwd, so a relative name
// ("./serve.sh", or a relative PATH entry) is resolved against cwd here.
func lookPath(p *specs.Process) (string, error) {
	name := p.Args[0]
	inCwd := func(n string) string {
		if path.IsAbs(n) {
			return n
		}
		return path.Join("/", p.Cwd, n)
	}
	if strings.Contains(name, "/") {
		return inCwd(name), checkExecutable(inCwd(name))
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range p.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		cand := inCwd(dir + "/" + name)
		if checkExecutable(cand) == nil {
			return cand, nil
		}
	}
	return "", fmt.Errorf("exec %q: executable file not found in $PATH", name)
}

func checkExecutable(p string) error {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return fmt.Errorf("exec %q: %w", p, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("exec %q: is a directory", p)
	}
	if st.Mode&0o111 == 0 {
		return fmt.Errorf("exec %q: %w", p, errors.New("permission denied"))
	}
	return nil
}
