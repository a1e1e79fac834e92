package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-containers/berth/internal/testutil"
)

// testDaemon is a berthd on a temp root and socket, stopped at cleanup.
type testDaemon struct {
	root, sock   string
	cgroupParent string
	bridge, bip  string // its own bridge network
	args         []string
	cmd          *exec.Cmd
	log          *os.File
	exited       chan struct{}
}

func startDaemon(t *testing.T) *testDaemon { t.Helper(); return startDaemonWith(t) }

// startDaemonWith starts berthd with extra flags.
func startDaemonWith(t *testing.T, extra ...string) *testDaemon {
	t.Helper()
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	id := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	d := &testDaemon{root: filepath.Join(dir, "root"), sock: filepath.Join(dir, "berth.sock"), cgroupParent: "/berth-itest-" + id}
	// A bridge and a /24 of its own, apart from other test processes' too.
	n := daemonCount.Add(1)
	d.bridge = fmt.Sprintf("brt%04x%02x", os.Getpid()&0xffff, n&0xff)
	d.bip = fmt.Sprintf("10.%d.%d.1/24", 200+os.Getpid()%50, n&0xff)
	d.args = []string{"--root", d.root, "-H", "unix://" + d.sock, "--config-file", os.DevNull, "--log-level", "debug",
		"--cgroup-parent", d.cgroupParent, "--bridge", d.bridge, "--bip", d.bip,
		// No GPU of the host's: GPU tests give a fake driver and CDI specs.
		"--cdi-spec-dir", filepath.Join(dir, "cdi"), "--nvidia-driver-root", filepath.Join(dir, "no-driver")}
	d.args = append(d.args, extra...)
	var err error
	if d.log, err = os.Create(filepath.Join(dir, "berthd.log")); err != nil {
		t.Fatal(err)
	}
	d.start(t)
	t.Cleanup(func() {
		d.removeAll(t)
		bridges := append(d.userBridges(t), d.bridge)
		d.stop()
		d.log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(d.log.Name())
			t.Logf("berthd log:\n%s", b)
		}
		checkNoLeaks(t, d.root, d.cgroupParent)
		for _, br := range bridges {
			checkNoNetworkLeaks(t, br)
		}
	})
	return d
}

var daemonCount atomic.Int32

// userBridges are the bridges of the networks the daemon's user made,
// which berthd removes at its stop when no container is on them.
func (d *testDaemon) userBridges(t *testing.T) []string {
	select {
	case <-d.exited:
		return nil
	default:
	}
	resp, err := d.http().Get("http://berth/networks")
	if err != nil {
		t.Errorf("list networks at cleanup: %v", err)
		return nil
	}
	defer resp.Body.Close()
	var nets []struct {
		Name    string
		Options map[string]string
	}
	_ = json.NewDecoder(resp.Body).Decode(&nets)
	var out []string
	for _, n := range nets {
		if br := n.Options["com.docker.network.bridge.name"]; br != "" && br != d.bridge {
			out = append(out, br)
		}
	}
	return out
}

// checkNoNetworkLeaks fails the test for a bridge, veth or iptables rule of
// the daemon's bridge network left behind.
func checkNoNetworkLeaks(t *testing.T, bridge string) {
	t.Helper()
	if out, err := exec.Command("ip", "-br", "link", "show", bridge).CombinedOutput(); err == nil {
		t.Errorf("bridge %s left: %s", bridge, out)
		if links, _ := exec.Command("ip", "-br", "link", "show", "master", bridge).CombinedOutput(); len(links) > 0 {
			t.Errorf("veths left on %s:\n%s", bridge, links)
		}
		_ = exec.Command("ip", "link", "del", bridge).Run()
	}
	for _, table := range []string{"filter", "nat"} {
		out, _ := exec.Command("iptables", "-t", table, "-S").CombinedOutput()
		if left := grepLines(string(out), "berth:"+bridge); left != "" {
			t.Errorf("iptables %s rules left:\n%s", table, left)
		}
	}
}

// start runs berthd and waits until it listens.
func (d *testDaemon) start(t *testing.T) {
	t.Helper()
	d.cmd = exec.Command(testutil.Build(t, "./cmd/daemon", true), d.args...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(d.cmd, d.exited)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			return
		}
		select {
		case <-d.exited:
			t.Fatal("berthd exited at start")
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatal("berthd did not listen")
}

// stop ends berthd gracefully (containers live on).
func (d *testDaemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.exited
}

// kill ends berthd with SIGKILL.
func (d *testDaemon) kill() {
	_ = d.cmd.Process.Kill()
	<-d.exited
}

// removeAll force-removes the daemon's containers, so that none outlives
// the test.
func (d *testDaemon) removeAll(t *testing.T) {
	select {
	case <-d.exited:
		return
	default:
	}
	resp, err := d.http().Get("http://berth/containers/json?all=1")
	if err != nil {
		t.Errorf("list containers at cleanup: %v", err)
		return
	}
	var list []struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	for _, c := range list {
		req, _ := http.NewRequest("DELETE", "http://berth/containers/"+c.ID+"?force=1", nil)
		if resp, err := d.http().Do(req); err == nil {
			resp.Body.Close()
		}
	}
}

// checkNoLeaks fails the test for a mount under root or a cgroup under
// parent left behind.
func checkNoLeaks(t *testing.T, root, parent string) {
	t.Helper()
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), root) {
		t.Errorf("mounts under %s left:\n%s", root, grepLines(string(b), root))
	}
	for _, dir := range mustGlob("/sys/fs/cgroup/*" + parent + "/*") {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			t.Errorf("cgroup left: %s", dir)
		}
	}
	for _, dir := range mustGlob("/sys/fs/cgroup/*" + parent) {
		os.Remove(dir) // empty ones only
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// http is a client for the daemon's socket.
func (d *testDaemon) http() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.sock)
	}}}
}

// docker runs the stock docker CLI against the daemon.
func (d *testDaemon) docker(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Require(t, "docker"), args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+filepath.Join(filepath.Dir(d.sock), "docker"))
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Errorf("docker %s: still running after %v", strings.Join(args, " "), cliTimeout)
	}
	return string(out), err
}

// cliTimeout bounds one docker or berth command: a command that hangs
// fails its test instead of the whole run's time limit.
const cliTimeout = 2 * time.Minute

func (d *testDaemon) dockerOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.docker(t, "", args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// berth runs the berth client against the daemon.
func (d *testDaemon) berth(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Build(t, "./cmd/client", false), args...)
	cmd.Env = append(os.Environ(), "BERTH_HOST=unix://"+d.sock, "DOCKER_CONFIG="+filepath.Join(filepath.Dir(d.sock), "berth-client"))
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Errorf("berth %s: still running after %v", strings.Join(args, " "), cliTimeout)
	}
	return string(out), err
}

func (d *testDaemon) berthOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.berth(t, "", args...)
	if err != nil {
		t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// busyboxTar is the busybox base image's rootfs (busybox-static and the
// probe) as a tarball, for import.
func busyboxTar(t *testing.T) string {
	t.Helper()
	rootfs := t.TempDir()
	testutil.Rootfs(t, rootfs)
	tarPath := filepath.Join(t.TempDir(), "rootfs.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "-cf", tarPath, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	return tarPath
}
