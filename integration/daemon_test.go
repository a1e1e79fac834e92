package integration

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-containers/berth/internal/testutil"
)

// testDaemon is a berthd on a temp root and socket, stopped at cleanup.
type testDaemon struct {
	root, sock string
	cmd        *exec.Cmd
}

func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	d := &testDaemon{root: filepath.Join(dir, "root"), sock: filepath.Join(dir, "berth.sock")}
	log, err := os.Create(filepath.Join(dir, "berthd.log"))
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(testutil.Build(t, "./cmd/daemon", false), "--root", d.root, "-H", "unix://"+d.sock,
		"--config-file", os.DevNull, "--log-level", "debug")
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("berthd log:\n%s", b)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			return d
		}
		select {
		case <-exited:
			t.Fatal("berthd exited at start")
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatal("berthd did not listen")
	return nil
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
	cmd := exec.Command(testutil.Require(t, "docker"), args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+filepath.Join(filepath.Dir(d.sock), "docker"))
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

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
	cmd := exec.Command(testutil.Build(t, "./cmd/client", false), args...)
	cmd.Env = append(os.Environ(), "BERTH_HOST=unix://"+d.sock, "DOCKER_CONFIG="+filepath.Join(filepath.Dir(d.sock), "berth-client"))
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
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
