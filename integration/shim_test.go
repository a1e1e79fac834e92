package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/logs"
	"github.com/berth-containers/berth/pkg/runtime"
	"github.com/berth-containers/berth/pkg/shim"
)

// shimFixture is a bundle and a shim directory for one container.
func shimFixture(t *testing.T, args ...string) (string, shim.Config) {
	t.Helper()
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	testutil.Rootfs(t, filepath.Join(bundle, "rootfs"))
	spec, err := runtime.DefaultSpec("rootfs", args...)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	spec.Linux.CgroupsPath = "/berth-itest-shim/" + id
	testutil.WriteSpec(t, bundle, spec)
	t.Cleanup(func() {
		for _, d := range mustGlob("/sys/fs/cgroup/*/berth-itest-shim") {
			os.Remove(d)
		}
	})
	return dir, shim.Config{ID: id, Bundle: bundle, RuntimeRoot: filepath.Join(dir, "runtime"),
		LogPath: filepath.Join(dir, id+"-json.log"), LogMaxSize: 1 << 20, LogMaxFiles: 2}
}

func waitExit(t *testing.T, dir string) *shim.Exit {
	t.Helper()
	for range 500 {
		e, err := shim.ReadExit(dir)
		if err == nil {
			return e
		}
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no exit.json after 10 s")
	return nil
}

// berthdWithoutMonitor is a copy of berthd with no berth-monitor beside
// it: its shims watch their containers themselves.
func berthdWithoutMonitor(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(testutil.Build(t, "./cmd/daemon", true))
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "berthd")
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

// TestShimRunsAndLogs: the shim starts the container in a session of its
// own, logs stdout and stderr in json-file format and records the exit;
// with berth-monitor beside berthd, the shim has become the monitor once
// the container runs, and without it stays berthd.
func TestShimRunsAndLogs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, exe, comm string }{
		{"monitor", testutil.Build(t, "./cmd/daemon", true), shim.MonitorName},
		{"go", berthdWithoutMonitor(t), "berthd"}, // a copy of the test build, named berthd
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testShimRunsAndLogs(t, tc.exe, tc.comm)
		})
	}
}

func testShimRunsAndLogs(t *testing.T, exe, comm string) {
	dir, cfg := shimFixture(t, "sh", "-c", "echo out; echo err >&2; sleep 0.3; exit 3")
	pid, err := shim.Start(exe, dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatalf("container pid %d: %v", pid, err)
	}
	ppid := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))[1]
	shimStat, _ := os.ReadFile("/proc/" + ppid + "/stat")
	f := strings.Fields(string(shimStat[strings.LastIndexByte(string(shimStat), ')')+2:]))
	if f[3] != ppid { // session id == the shim's pid: setsid
		t.Errorf("shim %s is in session %s, want its own", ppid, f[3])
	}
	// The shim becomes the monitor right after it reports the start.
	var parent string
	for range 100 {
		got, _ := os.ReadFile("/proc/" + ppid + "/comm")
		if parent = strings.TrimSpace(string(got)); parent == comm {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if parent != comm {
		t.Errorf("the container's parent is %q, want %s", parent, comm)
	}
	e := waitExit(t, dir)
	if e.ExitCode != 3 || e.Error != "" {
		t.Errorf("exit %+v, want code 3", e)
	}
	var got []string
	if err := logs.Read(context.Background(), cfg.LogPath, logs.ReadOptions{Tail: -1}, func(en logs.Entry) error {
		got = append(got, en.Stream+":"+strings.TrimSpace(en.Log))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "stdout:out,stderr:err" && strings.Join(got, ",") != "stderr:err,stdout:out" {
		t.Errorf("log %v", got)
	}
	if ids, _ := os.ReadDir(cfg.RuntimeRoot); len(ids) > 1 { // .seccomp may stay
		t.Errorf("runtime state left: %v", ids)
	}
}

// TestShimStartFailure: a container that cannot start (missing binary)
// makes Start return the runtime's error, and nothing keeps running.
func TestShimStartFailure(t *testing.T) {
	t.Parallel()
	dir, cfg := shimFixture(t, "/no/such/binary")
	_, err := shim.Start(testutil.Build(t, "./cmd/daemon", true), dir, cfg)
	if err == nil || !strings.Contains(err.Error(), "/no/such/binary") {
		t.Fatalf("start of a missing binary: %v", err)
	}
	e := waitExit(t, dir)
	if e.ExitCode != 255 || !strings.Contains(e.Error, "/no/such/binary") {
		t.Errorf("exit %+v", e)
	}
}

// launchShimEnv makes this test binary a short-lived launcher: it starts
// a shim, prints the container's pid and exits, as a berthd killed right
// after starting a container would.
const launchShimEnv = "BERTH_TEST_LAUNCH_SHIM"

func launchShimAndExit() {
	var req struct {
		Exe, Dir string
		Cfg      shim.Config
	}
	if err := json.Unmarshal([]byte(os.Getenv(launchShimEnv)), &req); err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	pid, err := shim.Start(req.Exe, req.Dir, req.Cfg)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(pid)
	os.Exit(0)
}

// TestContainerOutlivesLauncher: the process that started the shim exits
// (as a berthd killed with -9 would); the container keeps running, its log
// keeps growing, and its exit is still recorded.
func TestContainerOutlivesLauncher(t *testing.T) {
	t.Parallel()
	dir, cfg := shimFixture(t, "sh", "-c", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done; exit 7")
	req, _ := json.Marshal(map[string]any{"Exe": testutil.Build(t, "./cmd/daemon", true), "Dir": dir, "Cfg": cfg})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), launchShimEnv+"="+string(req))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("launcher: %v %s", err, out)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("launcher said %q", out)
	}
	// The launcher is gone; the container must still be alive.
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("container %d died with its launcher: %v", pid, err)
	}
	e := waitExit(t, dir)
	if e.ExitCode != 7 {
		t.Errorf("exit %+v, want 7", e)
	}
	n := 0
	_ = logs.Read(context.Background(), cfg.LogPath, logs.ReadOptions{Tail: -1}, func(logs.Entry) error { n++; return nil })
	if n != 5 {
		t.Errorf("%d log lines, want 5", n)
	}
}

// TestMonitorLog: berth-monitor writes Docker's json-file entries: text
// that JSON must escape comes back as written, a line longer than 16 KiB
// is split at 16 KiB, and output without a final newline is kept.
func TestMonitorLog(t *testing.T) {
	t.Parallel()
	script := `printf 'quote " backslash \\ tab \t cr \r bell \007 del \177 utf8 \303\274 <&>\n'
s=a; i=0; while [ $i -lt 15 ]; do s=$s$s; i=$((i+1)); done
echo "${s}xyz"
printf 'no newline'`
	dir, cfg := shimFixture(t, "sh", "-c", script)
	if _, err := shim.Start(testutil.Build(t, "./cmd/daemon", true), dir, cfg); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, dir); e.ExitCode != 0 {
		t.Fatalf("exit %+v", e)
	}
	var got []string
	if err := logs.Read(context.Background(), cfg.LogPath, logs.ReadOptions{Tail: -1}, func(e logs.Entry) error {
		got = append(got, e.Stream+":"+e.Log)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 1<<15) + "xyz\n"
	want := []string{"stdout:quote \" backslash \\ tab \t cr \r bell \a del \x7f utf8 ü <&>\n",
		"stdout:" + long[:16<<10], "stdout:" + long[16<<10:32<<10], "stdout:xyz\n", "stdout:no newline"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		for i := range got {
			if len(got[i]) > 80 {
				got[i] = fmt.Sprintf("%s... (%d bytes)", got[i][:80], len(got[i]))
			}
		}
		t.Errorf("log entries %q", got)
	}
}

// TestMonitorLogRotation: the log rotates by size and keeps LogMaxFiles
// files, the newest entries last.
func TestMonitorLogRotation(t *testing.T) {
	t.Parallel()
	dir, cfg := shimFixture(t, "sh", "-c", `i=0; while [ $i -lt 300 ]; do echo "line $i" >&2; i=$((i+1)); done`)
	cfg.LogMaxSize, cfg.LogMaxFiles = 4<<10, 3
	if _, err := shim.Start(testutil.Build(t, "./cmd/daemon", true), dir, cfg); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, dir); e.ExitCode != 0 {
		t.Fatalf("exit %+v", e)
	}
	for i, name := range []string{cfg.LogPath, cfg.LogPath + ".1", cfg.LogPath + ".2"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatalf("log file %d: %v", i, err)
		}
		if fi.Size() > cfg.LogMaxSize {
			t.Errorf("%s: %d bytes, over the %d allowed", name, fi.Size(), cfg.LogMaxSize)
		}
	}
	if _, err := os.Stat(cfg.LogPath + ".3"); err == nil {
		t.Errorf("a fourth log file is kept")
	}
	var got []string
	if err := logs.Read(context.Background(), cfg.LogPath, logs.ReadOptions{Tail: -1}, func(e logs.Entry) error {
		got = append(got, e.Log)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) < 50 || len(got) == 300 {
		t.Fatalf("%d entries kept of 300", len(got))
	}
	for i, l := range got {
		if want := fmt.Sprintf("line %d\n", 300-len(got)+i); l != want {
			t.Fatalf("entry %d is %q, want %q", i, l, want)
		}
	}
}

// TestMonitorLeavesNewSocket: once exit.json is written berthd may start
// the container again, whose new shim binds DIR/shim.sock while the old
// monitor still gives a slow attach client its last output (up to 2 s);
// the old monitor must not remove the new socket when it ends.
func TestMonitorLeavesNewSocket(t *testing.T) {
	t.Parallel()
	// 1 MiB of output, more than the client's socket takes unread.
	dir, cfg := shimFixture(t, "sh", "-c", `s=a; i=0; while [ $i -lt 20 ]; do s=$s$s; i=$((i+1)); done; sleep 0.2; echo $s`)
	launch, err := shim.Create(testutil.Build(t, "./cmd/daemon", true), dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := shim.Attach(dir, shim.AttachOptions{Stdout: true})
	if err != nil {
		launch.Abort()
		t.Fatal(err)
	}
	defer slow.Close() // never read before the end
	if err := launch.Start(); err != nil {
		t.Fatal(err)
	}
	waitExit(t, dir)
	// The next start's shim, played by the test.
	sock := filepath.Join(dir, "shim.sock")
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mine, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	// The old monitor ends once the slow client's 2 s are up.
	_, _ = io.Copy(io.Discard, slow)
	time.Sleep(100 * time.Millisecond)
	if now, err := os.Stat(sock); err != nil || !os.SameFile(now, mine) {
		t.Errorf("the new shim's socket was removed by the old monitor: %v", err)
	}
}
