package integration

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-containers/berth/internal/testutil"
)

// TestDockerCLIImages: the stock docker CLI drives berthd's image API:
// version, info, import, images, tag, login, push, rmi, pull, inspect,
// history, save, load, image prune.
func TestDockerCLIImages(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{Auth: true})
	start := time.Now().Add(-time.Second).Unix()
	if out := d.dockerOK(t, "version"); !strings.Contains(out, "Server: berth") || !strings.Contains(out, "1.47") {
		t.Errorf("docker version:\n%s", out)
	}
	if out := d.dockerOK(t, "info"); !strings.Contains(out, "Storage Driver: overlay") && !strings.Contains(out, "Storage Driver: copy") {
		t.Errorf("docker info:\n%s", out)
	}
	tarPath := busyboxTar(t)
	d.dockerOK(t, "import", tarPath, "berth/busybox:1")
	if out := d.dockerOK(t, "images"); !strings.Contains(out, "berth/busybox") {
		t.Errorf("docker images:\n%s", out)
	}
	ref := reg.Addr + "/berth/busybox:1"
	d.dockerOK(t, "tag", "berth/busybox:1", ref)
	if out, err := d.docker(t, "", "push", ref); err == nil {
		t.Errorf("push without login succeeded:\n%s", out)
	}
	if out, err := d.docker(t, "wrong\n", "login", reg.Addr, "-u", reg.User, "--password-stdin"); err == nil {
		t.Errorf("login with a wrong password succeeded:\n%s", out)
	}
	if out, err := d.docker(t, reg.Password+"\n", "login", reg.Addr, "-u", reg.User, "--password-stdin"); err != nil || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("docker login: %v\n%s", err, out)
	}
	out := d.dockerOK(t, "push", ref)
	if !strings.Contains(out, "Pushed") || !strings.Contains(out, "digest: sha256:") {
		t.Errorf("docker push:\n%s", out)
	}
	d.dockerOK(t, "rmi", ref, "berth/busybox:1")
	if out := d.dockerOK(t, "images", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("images left after rmi: %q", out)
	}
	out = d.dockerOK(t, "pull", ref)
	if !strings.Contains(out, "Pull complete") || !strings.Contains(out, "Downloaded newer image for "+ref) {
		t.Errorf("docker pull:\n%s", out)
	}
	if out := d.dockerOK(t, "inspect", "--format", "{{.Os}} {{index .RepoTags 0}}", ref); strings.TrimSpace(out) != "linux "+ref {
		t.Errorf("docker inspect: %q", out)
	}
	if out := d.dockerOK(t, "history", ref); !strings.Contains(out, "Imported from -") {
		t.Errorf("docker history:\n%s", out)
	}
	archive := filepath.Join(t.TempDir(), "saved.tar")
	d.dockerOK(t, "save", "-o", archive, ref)
	d.dockerOK(t, "rmi", ref)
	if out := d.dockerOK(t, "load", "-i", archive); !strings.Contains(out, "Loaded image: "+ref) {
		t.Errorf("docker load:\n%s", out)
	}
	if out := d.dockerOK(t, "system", "df"); !strings.Contains(out, "Images          1") {
		t.Errorf("docker system df:\n%s", out)
	}
	if out := d.dockerOK(t, "image", "prune", "-a", "-f"); !strings.Contains(out, "deleted: sha256:") {
		t.Errorf("docker image prune -a:\n%s", out)
	}
	events := d.dockerOK(t, "events", "--since", strconv.FormatInt(start, 10), "--until", strconv.FormatInt(time.Now().Unix()+1, 10), "--filter", "type=image")
	for _, want := range []string{"image import", "image tag", "image push", "image untag", "image pull", "image save", "image load", "image delete"} {
		if !strings.Contains(events, want) {
			t.Errorf("docker events lacks %q:\n%s", want, events)
		}
	}
	if out, err := d.docker(t, "", "pull", reg.Addr+"/no/such:image"); err == nil {
		t.Errorf("pull of an unknown image succeeded:\n%s", out)
	}
}

// TestAPIBadRequests: each bad request gets Docker's status and a
// {"message": ...} body naming the problem.
func TestAPIBadRequests(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	c := d.http()
	for _, tc := range []struct {
		method, path, body string
		status             int
		message            string
	}{
		{"GET", "/v1.47/images/nosuch/json", "", 404, "nosuch"},
		{"DELETE", "/images/nosuch", "", 404, "nosuch"},
		{"POST", "/images/create?fromImage=UPPER/Case", "", 400, "invalid reference"},
		{"POST", "/images/create", "", 400, "fromImage"},
		{"POST", "/auth", "{not json", 400, "invalid"},
		{"POST", "/auth", `{"username": "` + strings.Repeat("x", 2<<20) + `"}`, 413, "too large"},
		{"GET", "/v1.12/version", "", 400, "not supported"},
		{"GET", "/nosuch", "", 404, "page not found"},
	} {
		req, _ := http.NewRequest(tc.method, "http://berth"+tc.path, strings.NewReader(tc.body))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), `"message"`) || !strings.Contains(strings.ToLower(string(b)), strings.ToLower(tc.message)) {
			t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, b, tc.status, tc.message)
		}
	}
	resp, err := c.Get("http://berth/_ping")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "OK" || resp.Header.Get("Api-Version") != "1.47" || resp.Header.Get("Builder-Version") == "" {
		t.Errorf("_ping: %q %v", b, resp.Header)
	}
	// One daemon per root.
	second := exec.Command(testutil.Build(t, "./cmd/daemon", true), "--root", d.root, "-H", "unix://"+d.sock+"2", "--config-file", os.DevNull)
	if out, err := second.CombinedOutput(); err == nil || !strings.Contains(string(out), "another berthd") {
		t.Errorf("a second daemon on the same root: %v %s", err, out)
	}
}

// TestSocketActivation: berthd -H fd:// serves on a socket it inherits,
// as systemd passes it (LISTEN_PID, LISTEN_FDS, fd 3), and tells systemd
// (NOTIFY_SOCKET, Type=notify) READY=1 once it serves, STOPPING=1 at stop.
func TestSocketActivation(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "activated.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	f, err := ul.File()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=berth.socket exec "$0" "$@"`,
		testutil.Build(t, "./cmd/daemon", true), "--root", filepath.Join(dir, "root"), "-H", "fd://", "--config-file", os.DevNull)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+filepath.Join(dir, "notify"))
	cmd.ExtraFiles = []*os.File{f}
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	var resp *http.Response
	for range 100 {
		if resp, err = c.Get("http://berth/_ping"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("ping over the activated socket: %v\n%s", err, log.String())
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "OK" {
		t.Errorf("_ping: %q", b)
	}
	readNotify := func() string {
		buf := make([]byte, 256)
		_ = notify.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("read NOTIFY_SOCKET: %v", err)
		}
		return string(buf[:n])
	}
	if got := readNotify(); got != "READY=1" {
		t.Errorf("first notification %q, want READY=1", got)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if got := readNotify(); got != "STOPPING=1" {
		t.Errorf("notification at stop %q, want STOPPING=1", got)
	}
}
