package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-containers/berth/internal/testutil"
)

// withBusybox starts a daemon with the busybox rootfs imported as
// "busybox".
func withBusybox(t *testing.T) *testDaemon {
	t.Helper()
	d := startDaemon(t)
	d.dockerOK(t, "import", busyboxTar(t), "busybox")
	return d
}

// exitCode is the exit status in err (0 for nil).
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatal(err)
	return -1
}

// watchers lists, sorted, the names of berthd's children that watch a
// process: the shims (or monitors) with a child, but the idle one.
func watchers(t *testing.T, berthd int) string {
	t.Helper()
	children := func(pid int) []string { // of every thread: each forks
		var out []string
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, task := range tasks {
			b, _ := os.ReadFile(task)
			out = append(out, strings.Fields(string(b))...)
		}
		return out
	}
	var names []string
	for _, c := range children(berthd) {
		n, _ := strconv.Atoi(c)
		args, _ := os.ReadFile("/proc/" + c + "/cmdline")
		if len(children(n)) == 0 || strings.HasSuffix(string(args), "\x00__berth_shim\x00-\x00") {
			continue // the shim started ahead, idle (with its spare init)
		}
		comm, _ := os.ReadFile("/proc/" + c + "/comm")
		names = append(names, strings.TrimSpace(string(comm)))
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// eventually retries check for up to 10 s.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	for range 200 {
		if check() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("after 10 s: %s", what)
}

// TestDockerCLIContainers: the stock docker CLI runs containers on berthd:
// run (output, exit code, stdin, -it under a pty, -d), ps, logs, inspect,
// stop, start, restart, rename, rm, container prune.
func TestDockerCLIContainers(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	if out := d.dockerOK(t, "run", "--rm", "busybox", "echo", "hi"); out != "hi\n" {
		t.Errorf("run echo: %q", out)
	}
	out, err := d.docker(t, "", "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
	if code := exitCode(t, err); code != 3 || !strings.Contains(out, "out\n") || !strings.Contains(out, "err\n") {
		t.Errorf("run exit 3: code %d, %q", code, out)
	}
	if out, err := d.docker(t, "hello\nworld\n", "run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo done"); err != nil || out != "hello\nworld\ndone\n" {
		t.Errorf("run -i: %v %q", err, out)
	}
	// -it: a terminal of the client's size, raw output, the exit code.
	script := exec.Command(testutil.Require(t, "script"), "-qec",
		"stty rows 30 cols 100; docker run -it --rm busybox sh -c 'tty; stty size; exit 5'", os.DevNull)
	script.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+filepath.Join(filepath.Dir(d.sock), "docker"))
	b, err := script.CombinedOutput()
	if code := exitCode(t, err); code != 5 || !strings.Contains(string(b), "/dev/pts/0") || !strings.Contains(string(b), "30 100") {
		t.Errorf("run -it: code %d, %q", code, b)
	}
	if out := d.dockerOK(t, "ps", "-aq"); out != "" {
		t.Errorf("--rm containers left: %q", out)
	}

	id := strings.TrimSpace(d.dockerOK(t, "run", "-d", "--name", "web", "busybox", "sh", "-c",
		`trap "exit 7" TERM; echo started; while :; do sleep 0.05; done`))
	if len(id) != 64 {
		t.Fatalf("run -d printed %q", id)
	}
	eventually(t, "web logs 'started'", func() bool { return d.dockerOK(t, "logs", "web") == "started\n" })
	if out := d.dockerOK(t, "ps"); !strings.Contains(out, id[:12]) || !strings.Contains(out, "Up ") || !strings.Contains(out, "web") {
		t.Errorf("ps:\n%s", out)
	}
	if out := d.dockerOK(t, "inspect", "-f", "{{.State.Running}} {{.Name}} {{.Config.Image}}", id[:8]); out != "true /web busybox\n" {
		t.Errorf("inspect: %q", out)
	}
	// exec: output and exit code, stdin, a terminal, user and directory,
	// a missing command (127), detached.
	out, err = d.docker(t, "", "exec", "web", "sh", "-c", "echo in $(cat /proc/1/comm) $$; exit 3")
	if code := exitCode(t, err); code != 3 || !strings.HasPrefix(out, "in sh ") {
		t.Errorf("exec: code %d, %q", code, out)
	}
	if out, err := d.docker(t, "piped\n", "exec", "-i", "web", "cat"); err != nil || out != "piped\n" {
		t.Errorf("exec -i: %v %q", err, out)
	}
	script = exec.Command(testutil.Require(t, "script"), "-qec", "stty rows 12 cols 34; docker exec -it web sh -c 'stty size'", os.DevNull)
	script.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+filepath.Join(filepath.Dir(d.sock), "docker"))
	if b, err := script.CombinedOutput(); err != nil || !strings.Contains(string(b), "12 34") {
		t.Errorf("exec -it: %v %q", err, b)
	}
	if out := d.dockerOK(t, "exec", "-u", "1000:1000", "-w", "/tmp", "-e", "X=y", "web", "sh", "-c", "id -u; pwd; echo $X"); out != "1000\n/tmp\ny\n" {
		t.Errorf("exec -u -w -e: %q", out)
	}
	// Detach keys: ctrl-p ctrl-q leave an attached terminal, and the
	// container runs on.
	d.dockerOK(t, "run", "-dit", "--name", "term", "busybox", "sh")
	script = exec.Command(testutil.Require(t, "script"), "-qec", "docker attach term", os.DevNull)
	script.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+filepath.Join(filepath.Dir(d.sock), "docker"))
	// The keys go once the shell answered: the terminal is in raw mode
	// by then (before, the line discipline would take ctrl-q as XON).
	// An *os.File, so that Wait does not wait for stdin to end: closing
	// it early would be a ctrl-d to the shell.
	stdin, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdinW.Close()
	script.Stdin = stdin
	tout := &watchWriter{want: "attached-42", seen: make(chan struct{})}
	script.Stdout, script.Stderr = tout, tout
	if err := script.Start(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	go func() {
		fmt.Fprint(stdinW, "echo attached-$((40+2))\n")
		select {
		case <-tout.seen:
			fmt.Fprint(stdinW, "\x10\x11")
		case <-time.After(15 * time.Second):
		}
	}()
	done := make(chan error)
	go func() { done <- script.Wait() }()
	select {
	case <-done:
		// The docker CLI spots the keys itself, says so and exits 1.
		if !strings.Contains(tout.String(), "read escape sequence") {
			t.Errorf("attach and detach: %q", tout.String())
		}
	case <-time.After(20 * time.Second):
		_ = script.Process.Kill()
		t.Errorf("ctrl-p ctrl-q did not detach: %q", tout.String())
		<-done
	}
	if out := d.dockerOK(t, "inspect", "-f", "{{.State.Running}}", "term"); out != "true\n" {
		t.Errorf("after detach: running %q", out)
	}
	d.dockerOK(t, "rm", "-f", "term")
	out, err = d.docker(t, "", "exec", "web", "nosuch")
	if code := exitCode(t, err); code != 127 || !strings.Contains(out, `"nosuch"`) {
		t.Errorf("exec of a missing command: code %d, %q", code, out)
	}
	if out := d.dockerOK(t, "top", "web"); !strings.Contains(out, "PID") || !strings.Contains(out, "sleep 0.05") && !strings.Contains(out, "sh -c") {
		t.Errorf("top:\n%s", out)
	}
	if out := d.dockerOK(t, "stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "web"); !strings.HasPrefix(out, "web ") {
		t.Errorf("stats: %q", out)
	}
	if out := d.dockerOK(t, "system", "df"); !strings.Contains(out, "Containers      1") {
		t.Errorf("system df:\n%s", out)
	}
	d.dockerOK(t, "exec", "-d", "web", "sh", "-c", "echo detached > /tmp/d; sleep 2")
	eventually(t, "detached exec ran", func() bool { out, _ := d.docker(t, "", "exec", "web", "cat", "/tmp/d"); return out == "detached\n" })
	// The container and the running exec are each watched by a
	// berth-monitor (the shims became it), no Go shim.
	if got := watchers(t, d.cmd.Process.Pid); got != "berth-monitor berth-monitor" {
		t.Errorf("processes watching the container and its exec: %q", got)
	}
	out, err = d.docker(t, "", "rm", "web")
	if err == nil || !strings.Contains(out, "container is running") {
		t.Errorf("rm of a running container: %v %s", err, out)
	}
	since := time.Now().Add(-time.Second).Unix()
	d.dockerOK(t, "stop", "web")
	if out := d.dockerOK(t, "events", "--since", fmt.Sprint(since), "--until", fmt.Sprint(time.Now().Unix()+1), "--filter", "event=die"); !strings.Contains(out, "container die "+id) || !strings.Contains(out, "exitCode=7") {
		t.Errorf("events: %q", out)
	}
	if out := d.dockerOK(t, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "web"); out != "exited 7\n" {
		t.Errorf("after stop: %q", out)
	}
	if out := d.dockerOK(t, "ps", "-a"); !strings.Contains(out, "Exited (7)") {
		t.Errorf("ps -a:\n%s", out)
	}
	d.dockerOK(t, "start", "web")
	eventually(t, "web logs twice", func() bool { return d.dockerOK(t, "logs", "web") == "started\nstarted\n" })
	d.dockerOK(t, "restart", "-t", "1", "web")
	d.dockerOK(t, "rename", "web", "web2")
	if out := d.dockerOK(t, "ps", "--format", "{{.Names}} {{.State}}"); out != "web2 running\n" {
		t.Errorf("ps after rename: %q", out)
	}
	if out := d.dockerOK(t, "logs", "--tail", "1", "web2"); out != "started\n" {
		t.Errorf("logs --tail 1: %q", out)
	}
	d.dockerOK(t, "rm", "-f", "web2")

	// logs -f follows until the container ends; -t adds timestamps.
	d.dockerOK(t, "run", "-d", "--name", "talker", "busybox", "sh", "-c", "echo a; sleep 0.5; echo b >&2; sleep 0.3; echo c")
	if out := d.dockerOK(t, "logs", "-f", "talker"); out != "a\nb\nc\n" {
		t.Errorf("logs -f: %q", out)
	}
	if out := d.dockerOK(t, "logs", "-t", "--tail", "1", "talker"); !strings.HasSuffix(out, "Z c\n") || !strings.HasPrefix(out, "20") {
		t.Errorf("logs -t --tail 1: %q", out)
	}
	d.dockerOK(t, "rm", "talker")
	d.dockerOK(t, "create", "--name", "c1", "busybox", "true")
	d.dockerOK(t, "run", "--name", "c2", "busybox", "true")
	d.dockerOK(t, "run", "-d", "--name", "c3", "busybox", "sleep", "60")
	out = d.dockerOK(t, "container", "prune", "-f")
	if !strings.Contains(out, "Total reclaimed space") || strings.Count(out, "\n") < 3 {
		t.Errorf("container prune:\n%s", out)
	}
	if out := d.dockerOK(t, "ps", "-a", "--format", "{{.Names}}"); out != "c3\n" {
		t.Errorf("after prune: %q", out)
	}
}

// TestDaemonKilledContainersLive: berthd killed with SIGKILL while five
// containers run; they run on, log without a gap, and the restarted daemon
// finds them, and the exit of one that ended meanwhile.
func TestDaemonKilledContainersLive(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	for i := range 5 {
		d.dockerOK(t, "run", "-d", "--name", fmt.Sprint("count", i), "busybox", "sh", "-c",
			`trap "exit 9" TERM; i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done`)
	}
	d.dockerOK(t, "run", "-d", "--name", "ends", "busybox", "sh", "-c", "sleep 1; exit 4")
	d.dockerOK(t, "run", "-d", "--name", "lost", "busybox", "sleep", "60")
	pid, _ := strconv.Atoi(strings.TrimSpace(d.dockerOK(t, "inspect", "-f", "{{.State.Pid}}", "lost")))
	time.Sleep(300 * time.Millisecond)
	d.kill()
	// "lost" loses its shim and then its process, so nobody records its
	// exit; the next daemon marks it exited, 255.
	shimPid := parentOf(t, pid)
	if err := syscall.Kill(shimPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // "ends" ends while no daemon runs
	d.start(t)
	if out := d.dockerOK(t, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "lost"); out != "exited 255\n" {
		t.Errorf("container whose shim was killed: %q", out)
	}
	if out := d.dockerOK(t, "ps", "-q"); strings.Count(out, "\n") != 5 {
		t.Errorf("running after the restart:\n%s", out)
	}
	if out := d.dockerOK(t, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "ends"); out != "exited 4\n" {
		t.Errorf("container that ended meanwhile: %q", out)
	}
	// The restarted daemon hears of exits: stop waits for it.
	d.dockerOK(t, "stop", "count0")
	if out := d.dockerOK(t, "inspect", "-f", "{{.State.ExitCode}}", "count0"); out != "9\n" {
		t.Errorf("exit code after the restart: %q", out)
	}
	// A graceful stop leaves them running too.
	d.stop()
	d.start(t)
	if out := d.dockerOK(t, "ps", "-q"); strings.Count(out, "\n") != 4 {
		t.Errorf("running after a graceful restart:\n%s", out)
	}
	for i := range 5 {
		lines := strings.Fields(d.dockerOK(t, "logs", fmt.Sprint("count", i)))
		if len(lines) < 30 {
			t.Errorf("count%d logged %d lines", i, len(lines))
		}
		for n, l := range lines {
			if l != strconv.Itoa(n) {
				t.Errorf("count%d: line %d is %q: a gap", i, n, l)
				break
			}
		}
	}
}

// TestParallelRunRm: 50 `docker run --rm` at once: no error, nothing left.
func TestParallelRunRm(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := d.docker(t, "", "run", "--rm", "busybox", "echo", fmt.Sprint("n", i))
			if err != nil || out != fmt.Sprintf("n%d\n", i) {
				errs <- fmt.Sprintf("run %d: %v %q", i, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	eventually(t, "no container left", func() bool { return d.dockerOK(t, "ps", "-aq") == "" })
	if entries, _ := os.ReadDir(filepath.Join(d.root, "containers")); len(entries) != 0 {
		t.Errorf("container dirs left: %d", len(entries))
	}
}

// TestRestartPolicies: on-failure:N retries N times; always restarts a
// clean exit until the user stops it.
func TestRestartPolicies(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	d.dockerOK(t, "run", "-d", "--name", "fails", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 1")
	d.dockerOK(t, "run", "-d", "--name", "loops", "--restart", "always", "busybox", "sh", "-c", "echo run; sleep 0.2")
	eventually(t, "fails restarted twice and stays exited", func() bool {
		return d.dockerOK(t, "inspect", "-f", "{{.RestartCount}} {{.State.Status}}", "fails") == "2 exited\n" &&
			d.dockerOK(t, "logs", "fails") == "run\nrun\nrun\n"
	})
	eventually(t, "loops restarted", func() bool {
		return strings.Count(d.dockerOK(t, "logs", "loops"), "run") >= 3
	})
	// An always container that ended while berthd was down is started
	// again when berthd comes back.
	before := strings.Count(d.dockerOK(t, "logs", "loops"), "run")
	d.kill()
	time.Sleep(500 * time.Millisecond)
	d.start(t)
	eventually(t, "loops restarted by the new daemon", func() bool {
		return strings.Count(d.dockerOK(t, "logs", "loops"), "run") > before
	})
	d.dockerOK(t, "stop", "loops")
	n := d.dockerOK(t, "logs", "loops")
	time.Sleep(time.Second)
	if after := d.dockerOK(t, "logs", "loops"); after != n {
		t.Errorf("stopped container restarted: %q then %q", n, after)
	}
	if out := d.dockerOK(t, "inspect", "-f", "{{.State.Status}}", "loops"); out != "exited\n" {
		t.Errorf("stopped: %q", out)
	}
}

// TestContainerBadRequests: what Docker answers for bad container requests.
func TestContainerBadRequests(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	d.dockerOK(t, "run", "-d", "--name", "busy", "busybox", "sleep", "60")
	c := d.http()
	for _, tc := range []struct {
		method, path, body string
		status             int
		message            string
	}{
		{"GET", "/containers/nosuch/json", "", 404, "No such container: nosuch"},
		{"POST", "/containers/nosuch/start", "", 404, "No such container"},
		{"POST", "/containers/create?name=busy", `{"Image": "busybox", "Cmd": ["true"]}`, 409, `name "/busy" is already in use`},
		{"POST", "/containers/create", `{"Image": "busybox"}`, 400, "no command"},
		{"POST", "/containers/create?name=bad%20name", `{"Image": "busybox", "Cmd": ["true"]}`, 400, "invalid container name"},
		{"POST", "/containers/create", `{"Image": `, 400, "unexpected EOF"},
		{"POST", "/containers/create", `{"Image": "` + strings.Repeat("x", 2<<20) + `"}`, 413, "too large"},
		{"POST", "/containers/create", `{"Image": "UPPER/Case"}`, 400, "UPPER/Case"},
		{"POST", "/containers/create", `{"Image": "nosuch/image"}`, 404, "nosuch/image"},
		{"DELETE", "/containers/busy", "", 409, "container is running"},
		{"POST", "/containers/busy/kill?signal=NOPE", "", 400, "invalid signal"},
		{"POST", "/containers/create", `{"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "host", "PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}}`, 400, "conflicting options: port publishing"},
		{"POST", "/containers/create", `{"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "nosuch"}}`, 404, "network nosuch not found"},
		{"POST", "/containers/create", `{"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "container:nosuch"}}`, 404, "No such container: nosuch"},
		{"POST", "/containers/create", `{"Image": "busybox", "Cmd": ["true"], "HostConfig": {"DeviceRequests": [{"Count": -1, "Capabilities": [["gpu"]]}]}}`, 400, "could not select device driver"},
		{"POST", "/containers/busy/wait?condition=never", "", 400, "invalid condition"},
	} {
		req, _ := http.NewRequest(tc.method, "http://berth/v1.47"+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var msg struct{ Message string }
		_ = json.Unmarshal(b, &msg)
		if resp.StatusCode != tc.status || !strings.Contains(msg.Message, tc.message) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, b, tc.status, tc.message)
		}
	}
}

// TestBerthCLIContainers: berth's own container commands and the run
// flags that shape the container.
func TestBerthCLIContainers(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	if out := d.berthOK(t, "run", "--rm", "busybox", "echo", "hi"); out != "hi\n" {
		t.Errorf("run echo: %q", out)
	}
	out, err := d.berth(t, "", "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
	if code := exitCode(t, err); code != 3 || !strings.Contains(out, "out\n") || !strings.Contains(out, "err\n") {
		t.Errorf("run exit 3: code %d, %q", code, out)
	}
	if out, err := d.berth(t, "a\nb\n", "run", "-i", "--rm", "busybox", "cat"); err != nil || out != "a\nb\n" {
		t.Errorf("run -i: %v %q", err, out)
	}
	script := exec.Command(testutil.Require(t, "script"), "-qec",
		"stty rows 24 cols 70; "+testutil.Build(t, "./cmd/client", false)+" run -it --rm busybox sh -c 'stty size; exit 6'", os.DevNull)
	script.Env = append(os.Environ(), "BERTH_HOST=unix://"+d.sock)
	b, err := script.CombinedOutput()
	if code := exitCode(t, err); code != 6 || !strings.Contains(string(b), "24 70") {
		t.Errorf("run -it: code %d, %q", code, b)
	}

	// Flags that shape the container.
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "in"), []byte("from host"), 0o644)
	envFile := filepath.Join(t.TempDir(), "env")
	os.WriteFile(envFile, []byte("# comment\nFROM_FILE=1\nBOTH=file\n"), 0o644)
	out = d.berthOK(t, "run", "--rm", "-e", "A=b", "-e", "BOTH=flag", "--env-file", envFile, "-w", "/tmp", "-u", "1000:1000",
		"-v", host+":/data", "-v", host+":/ro:ro", "--shm-size", "8m", "--hostname", "box", "busybox", "sh", "-c",
		`echo $A $FROM_FILE $BOTH; pwd; id -u; id -g; cat /data/in; echo; touch /ro/x 2>/dev/null || echo ro; hostname; df -k /dev/shm | tail -1 | awk '{print $2}'`)
	if want := "b 1 flag\n/tmp\n1000\n1000\nfrom host\nro\nbox\n8192\n"; out != want {
		t.Errorf("run with flags:\n got %q\nwant %q", out, want)
	}
	out = d.berthOK(t, "run", "--rm", "--entrypoint", "echo", "--read-only", "busybox", "entry")
	if out != "entry\n" {
		t.Errorf("--entrypoint: %q", out)
	}
	if out, err := d.berth(t, "", "run", "--rm", "--read-only", "busybox", "touch", "/x"); err == nil {
		t.Errorf("--read-only let the container write: %q", out)
	}
	// Limits land in the container's cgroup.
	id := strings.TrimSpace(d.berthOK(t, "run", "-d", "--name", "limited", "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5",
		"busybox", "sleep", "60"))
	cg := func(controller, file string) string {
		for _, p := range mustGlob("/sys/fs/cgroup/" + controller + d.cgroupParent + "/" + id + "/" + file) {
			b, _ := os.ReadFile(p)
			return strings.TrimSpace(string(b))
		}
		return ""
	}
	if mem := cg("memory", "memory.limit_in_bytes") + cg("unified", "memory.max"); mem != "67108864" {
		t.Errorf("memory limit: %q", mem)
	}
	if pids := cg("pids", "pids.max") + cg("unified", "pids.max"); pids != "50" {
		t.Errorf("pids limit: %q", pids)
	}
	if quota := cg("cpu", "cpu.cfs_quota_us") + cg("unified", "cpu.max"); quota != "50000" && quota != "50000 100000" {
		t.Errorf("cpu quota: %q", quota)
	}

	// Lifecycle commands.
	d.berthOK(t, "run", "-d", "--name", "svc", "-l", "role=web", "busybox", "sh", "-c", `trap "exit 2" TERM; echo up; while :; do sleep 0.05; done`)
	eventually(t, "svc logs 'up'", func() bool { return d.berthOK(t, "logs", "svc") == "up\n" })
	if out := d.berthOK(t, "ps", "--filter", "label=role=web", "--format", "{{.Names}} {{.State}}"); out != "svc running\n" {
		t.Errorf("ps --filter --format: %q", out)
	}
	if out := d.berthOK(t, "ps"); !strings.Contains(out, "CONTAINER ID") || !strings.Contains(out, "svc") || !strings.Contains(out, "limited") {
		t.Errorf("ps:\n%s", out)
	}
	if out := d.berthOK(t, "__complete", "stop", ""); !strings.Contains(out, "svc\n") || !strings.Contains(out, "limited\n") {
		t.Errorf("completion of container names: %q", out)
	}
	if out, err := d.berth(t, "", "rm", "svc"); err == nil || !strings.Contains(out, "container is running") {
		t.Errorf("rm of a running container: %v %q", err, out)
	}
	d.berthOK(t, "stop", "svc")
	if out := d.berthOK(t, "wait", "svc"); out != "2\n" {
		t.Errorf("wait: %q", out)
	}
	d.berthOK(t, "create", "--name", "once", "busybox", "sh", "-c", "echo once; exit 4")
	if out, err := d.berth(t, "", "start", "-a", "once"); exitCode(t, err) != 4 || out != "once\n" {
		t.Errorf("start -a: %v %q", err, out)
	}
	d.berthOK(t, "start", "svc")
	out, err = d.berth(t, "in\n", "exec", "-i", "-e", "V=w", "svc", "sh", "-c", "cat; echo $V; exit 5")
	if code := exitCode(t, err); code != 5 || out != "in\nw\n" {
		t.Errorf("berth exec: code %d, %q", code, out)
	}
	d.berthOK(t, "rename", "svc", "svc2")
	if out := d.berthOK(t, "inspect", "-f", "{{.Name}} {{.State.Status}}", "svc2"); out != "/svc2 running\n" {
		t.Errorf("inspect: %q", out)
	}
	d.berthOK(t, "restart", "-t", "1", "svc2")
	d.berthOK(t, "kill", "svc2")
	if out := d.berthOK(t, "inspect", "-f", "{{.State.ExitCode}}", "svc2"); out != "137\n" {
		t.Errorf("after kill: %q", out)
	}
	if out := d.berthOK(t, "system", "df"); !strings.Contains(out, "Containers   3") && !strings.Contains(out, "Containers") {
		t.Errorf("system df:\n%s", out)
	}
	d.berthOK(t, "rm", "-f", "limited")
	if out := d.berthOK(t, "container", "prune", "-f"); !strings.Contains(out, "Deleted Containers:") {
		t.Errorf("container prune:\n%s", out)
	}
	d.berthOK(t, "create", "busybox", "true")
	if out := d.berthOK(t, "system", "prune", "-f"); !strings.Contains(out, "Deleted Containers:") {
		t.Errorf("system prune:\n%s", out)
	}
	if out := d.berthOK(t, "ps", "-aq"); out != "" {
		t.Errorf("left after prune: %q", out)
	}
}

// watchWriter collects output and closes seen once want appears in it.
type watchWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// parentOf is a process's parent pid, from /proc.
func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	ppid, _ := strconv.Atoi(strings.Fields(s[strings.LastIndexByte(s, ')')+2:])[1])
	return ppid
}

// TestDaemonContainerDefaults: with --log-opt max-size and max-file, a
// chatty container's log is rotated and bounded, and logs reads across
// the files; --default-ulimit applies unless the container sets its own.
func TestDaemonContainerDefaults(t *testing.T) {
	t.Parallel()
	d := startDaemonWith(t, "--log-opt", "max-size=2k", "--log-opt", "max-file=3", "--default-ulimit", "nofile=512:1024")
	d.dockerOK(t, "import", busyboxTar(t), "busybox")
	if out := d.dockerOK(t, "run", "--rm", "busybox", "sh", "-c", "ulimit -n; ulimit -Hn"); out != "512\n1024\n" {
		t.Errorf("default ulimit: %q", out)
	}
	if out := d.dockerOK(t, "run", "--rm", "--ulimit", "nofile=256:256", "busybox", "sh", "-c", "ulimit -n"); out != "256\n" {
		t.Errorf("the container's own ulimit: %q", out)
	}
	id := strings.TrimSpace(d.dockerOK(t, "run", "-d", "busybox", "sh", "-c", `i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done`))
	d.dockerOK(t, "wait", id)
	files, _ := filepath.Glob(filepath.Join(d.root, "containers", id, id+"-json.log*"))
	if len(files) != 3 {
		t.Errorf("log files: %v, want 3", files)
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.Size() > 2048 {
			t.Errorf("%s: %v bytes, want at most 2048", f, fi.Size())
		}
	}
	lines := strings.Fields(d.dockerOK(t, "logs", id))
	if len(lines) == 0 || len(lines) >= 300 || lines[len(lines)-1] != "line-299" {
		t.Fatalf("logs after rotation: %d lines, last %q", len(lines), lines[len(lines)-1:])
	}
	first, _ := strconv.Atoi(strings.TrimPrefix(lines[0], "line-"))
	for i, l := range lines {
		if l != fmt.Sprint("line-", first+i) {
			t.Fatalf("line %d is %q: a gap across files", i, l)
		}
	}
}

// TestCreatedMountReleased: create mounts the root filesystem (a run's
// start finds it there); a container only created gives the mount back
// within seconds, and still starts; once it ended, the mount goes.
func TestCreatedMountReleased(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	id := strings.TrimSpace(d.dockerOK(t, "create", "busybox", "echo", "started"))
	rootfs := filepath.Join(d.root, "containers", id, "snap", "rootfs")
	mounted := func() bool {
		b, _ := os.ReadFile("/proc/self/mountinfo")
		return strings.Contains(string(b), " "+rootfs+" ")
	}
	if !mounted() {
		t.Fatalf("%s is not mounted after create", rootfs)
	}
	eventually(t, "the created container's mount released", func() bool { return !mounted() })
	if out := d.dockerOK(t, "start", "-a", id); out != "started\n" {
		t.Errorf("start -a: %q", out)
	}
	// berthd records the end with the mount, runtime state and cgroup in
	// place and releases them after.
	eventually(t, "the ended container's mount, runtime state and cgroup released", func() bool {
		return !mounted() && !runtimeLeft(d, id)
	})
	// A start at once after an end finds them left, and deletes them.
	for range 2 {
		if out := d.dockerOK(t, "start", "-a", id); out != "started\n" {
			t.Errorf("start -a right after the end: %q", out)
		}
	}
}

// runtimeLeft reports whether the runtime's state or a cgroup of the
// container is there.
func runtimeLeft(d *testDaemon, id string) bool {
	_, err := os.Stat(filepath.Join(d.root, "runtime", id))
	return err == nil || len(mustGlob("/sys/fs/cgroup/*"+d.cgroupParent+"/"+id)) > 0
}

// TestRemovedContainerFilesGo: rm moves the container's directory to the
// trash and deletes it there, after the removal answered; what a stopped
// berthd left in the trash goes when it starts again.
func TestRemovedContainerFilesGo(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	id := strings.TrimSpace(d.dockerOK(t, "run", "-d", "busybox", "sh", "-c", "echo data > /file"))
	d.dockerOK(t, "wait", id)
	d.dockerOK(t, "rm", id)
	trash := filepath.Join(d.root, "trash")
	eventually(t, "the container's files, runtime state and cgroup deleted", func() bool {
		_, err := os.Stat(filepath.Join(d.root, "containers", id))
		left, _ := os.ReadDir(trash)
		return errors.Is(err, os.ErrNotExist) && len(left) == 0 && !runtimeLeft(d, id)
	})
	d.stop()
	if err := os.MkdirAll(filepath.Join(trash, "left", "upper"), 0o700); err != nil {
		t.Fatal(err)
	}
	d.start(t)
	if left, _ := os.ReadDir(trash); len(left) != 0 {
		t.Errorf("the trash still holds %v after a start", left)
	}
}

// TestOOMKilledReported: a container killed by the memory cgroup's OOM
// killer exits 137 and inspect says OOMKilled (berth-monitor records the
// end, with the OOM kill count of the container's cgroup).
func TestOOMKilledReported(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	_, err := d.docker(t, "", "run", "--name", "hog", "--memory", "16m", "--memory-swap", "16m", "busybox",
		"sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done")
	if code := exitCode(t, err); code != 137 {
		t.Errorf("exit code %d, want 137", code)
	}
	if out := d.dockerOK(t, "inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", "hog"); out != "true 137\n" {
		t.Errorf("inspect: %q, want OOMKilled and 137", out)
	}
}

// TestRunRmFailedStart: as with Docker, an --rm container whose start
// fails is removed, so that `docker run --rm` (waiting for the removal)
// ends, with 127 for a command not found and 126 for one that cannot run.
func TestRunRmFailedStart(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	for _, tc := range []struct {
		cli  func(*testing.T, string, ...string) (string, error)
		cmd  string
		code int
	}{{d.docker, "/nonexistent", 127}, {d.berth, "/nonexistent", 127}, {d.berth, "/etc", 126}} {
		out, err := tc.cli(t, "", "run", "--rm", "busybox", tc.cmd)
		if code := exitCode(t, err); code != tc.code {
			t.Errorf("run --rm busybox %s: exit %d, want %d: %s", tc.cmd, code, tc.code, out)
		}
	}
	if out := d.dockerOK(t, "ps", "-aq"); out != "" {
		t.Errorf("containers left: %q", out)
	}
}
