package integration

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/internal/testutil"
	berthruntime "github.com/berth-containers/berth/pkg/runtime"
)

type cliFixture struct {
	bin, root, bundle, id string
	spec                  *specs.Spec
}

func newCLIFixture(t *testing.T, args ...string) *cliFixture {
	t.Helper()
	testutil.RequiresRoot(t)
	// Containers created by one `berthd runtime create` outlive it; as their
	// subreaper this test reaps them instead of leaving zombies.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &cliFixture{bin: testutil.Build(t, "./cmd/daemon", true), root: filepath.Join(dir, "state"), bundle: filepath.Join(dir, "bundle")}
	testutil.Rootfs(t, filepath.Join(f.bundle, "rootfs"))
	var err error
	if f.spec, err = berthruntime.DefaultSpec("rootfs", args...); err != nil {
		t.Fatal(err)
	}
	f.id = strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	f.spec.Linux.CgroupsPath = "/berth-itest-" + strconv.Itoa(os.Getpid()) + "/" + f.id
	t.Cleanup(func() {
		_, _ = f.cmd("delete", "--force", f.id)
		os.Remove("/sys/fs/cgroup/memory/berth-itest-" + strconv.Itoa(os.Getpid()))
		for _, d := range mustGlob("/sys/fs/cgroup/*/berth-itest-" + strconv.Itoa(os.Getpid())) {
			os.Remove(d)
		}
	})
	return f
}

func mustGlob(p string) []string {
	m, _ := filepath.Glob(p)
	return m
}

// cmd runs `berthd runtime`. Output goes through a file, not a pipe: a
// created container inherits stdio and would hold a pipe open past the
// command's exit.
func (f *cliFixture) cmd(args ...string) (string, error) {
	out, err := os.CreateTemp("", "berthd-out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.Command(f.bin, append([]string{"runtime", "--root", f.root}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	b, _ := os.ReadFile(out.Name())
	return string(b), err
}

func (f *cliFixture) state(t *testing.T) berthruntime.State {
	t.Helper()
	out, err := f.cmd("state", f.id)
	if err != nil {
		t.Fatalf("state: %v: %s", err, out)
	}
	var st berthruntime.State
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("state output %q: %v", out, err)
	}
	return st
}

func TestRuntimeCLIRunExitCode(t *testing.T) {
	t.Parallel()
	f := newCLIFixture(t, "sh", "-c", "echo hello from $(hostname); exit 3")
	testutil.WriteSpec(t, f.bundle, f.spec)
	out, err := f.cmd("run", "--bundle", f.bundle, f.id)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("run: %v, want exit code 3; output %q", err, out)
	}
	if strings.TrimSpace(out) != "hello from berth" {
		t.Errorf("output %q", out)
	}
	if out, _ := f.cmd("list"); strings.Contains(out, f.id) {
		t.Errorf("run left the container behind: %s", out)
	}
}

// TestRuntimeCLILifecycle drives create / state / start / kill / delete as
// separate processes, as containerd drives runc.
func TestRuntimeCLILifecycle(t *testing.T) {
	t.Parallel()
	f := newCLIFixture(t, "/probe", "sleep", "1h")
	testutil.WriteSpec(t, f.bundle, f.spec)
	pidFile := filepath.Join(t.TempDir(), "pid")
	if out, err := f.cmd("create", "--bundle", f.bundle, "--pid-file", pidFile, f.id); err != nil {
		t.Fatalf("create: %v: %s", err, out)
	}
	st := f.state(t)
	b, _ := os.ReadFile(pidFile)
	if st.Status != specs.StateCreated || strconv.Itoa(st.Pid) != string(b) {
		t.Fatalf("after create: %+v, pid file %q", st, b)
	}
	if out, err := f.cmd("start", f.id); err != nil {
		t.Fatalf("start: %v: %s", err, out)
	}
	if st := f.state(t); st.Status != specs.StateRunning {
		t.Fatalf("after start: %s", st.Status)
	}
	if out, err := f.cmd("delete", f.id); err == nil || !strings.Contains(out, "running") {
		t.Errorf("delete of a running container: %v %s", err, out)
	}
	if out, err := f.cmd("kill", f.id, "KILL"); err != nil {
		t.Fatalf("kill: %v: %s", err, out)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(st.Pid, &ws, 0, nil); err != nil || ws.Signal() != unix.SIGKILL {
		t.Errorf("reap: %v, status %v", err, ws)
	}
	if st := f.state(t); st.Status != specs.StateStopped {
		t.Errorf("after kill: %s", st.Status)
	}
	if out, err := f.cmd("delete", f.id); err != nil {
		t.Fatalf("delete: %v: %s", err, out)
	}
	if out, err := f.cmd("state", f.id); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("state after delete: %v %s", err, out)
	}
}

// TestRuntimeCLIConsoleSocket: the pty master reaches --console-socket, as
// with runc, and the container sees a terminal.
func TestRuntimeCLIConsoleSocket(t *testing.T) {
	t.Parallel()
	f := newCLIFixture(t, "/probe", "isatty")
	f.spec.Process.Terminal = true
	testutil.WriteSpec(t, f.bundle, f.spec)
	sock := filepath.Join(t.TempDir(), "console.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	masters := make(chan *os.File, 1)
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		buf, oob := make([]byte, 64), make([]byte, unix.CmsgSpace(4))
		_, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		if len(msgs) == 1 {
			if fds, _ := unix.ParseUnixRights(&msgs[0]); len(fds) == 1 {
				masters <- os.NewFile(uintptr(fds[0]), "ptmx")
			}
		}
	}()
	if out, err := f.cmd("create", "--bundle", f.bundle, "--console-socket", sock, f.id); err != nil {
		t.Fatalf("create: %v: %s", err, out)
	}
	var m *os.File
	select {
	case m = <-masters:
	case <-time.After(10 * time.Second):
		t.Fatal("no pty master on the console socket")
	}
	defer m.Close()
	pid := f.state(t).Pid
	if out, err := f.cmd("start", f.id); err != nil {
		t.Fatalf("start: %v: %s", err, out)
	}
	buf := make([]byte, 64)
	n, _ := m.Read(buf)
	if got := strings.TrimSpace(string(buf[:n])); got != "true" {
		t.Errorf("container output %q, want a terminal", got)
	}
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, 0, nil)
}

func TestRuntimeCLIBadInput(t *testing.T) {
	t.Parallel()
	f := newCLIFixture(t, "true")
	out, err := f.cmd("create", "--bundle", filepath.Join(t.TempDir(), "nothing"), f.id)
	if err == nil || !strings.Contains(out, "config.json") {
		t.Errorf("create from an empty dir: %v %q", err, out)
	}
	if out, err := f.cmd("kill", f.id, "NOSIG"); err == nil || !strings.Contains(out, `signal "NOSIG"`) {
		t.Errorf("kill with a bad signal: %v %q", err, out)
	}
}

// TestRuntimeCLIRunForwardsSignals: a signal sent to `runtime run` reaches
// the container's process, whose exit code becomes run's.
func TestRuntimeCLIRunForwardsSignals(t *testing.T) {
	t.Parallel()
	f := newCLIFixture(t, "sh", "-c", `trap "exit 3" TERM; while :; do sleep 0.05; done`)
	testutil.WriteSpec(t, f.bundle, f.spec)
	run := exec.Command(f.bin, "runtime", "--root", f.root, "run", "--bundle", f.bundle, f.id)
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if out, _ := f.cmd("state", f.id); strings.Contains(out, `"running"`) {
			break
		}
		if time.Now().After(deadline) {
			_ = run.Process.Kill()
			t.Fatal("container did not reach running")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let the shell install its trap
	if err := run.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := run.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("run: %v, want exit code 3 from the container's trap", err)
	}
}
