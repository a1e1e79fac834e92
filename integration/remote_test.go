package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-containers/berth/internal/testutil"
)

// labCerts makes a lab CA, berthd's certificate and alice's with
// scripts/gen-certs, as an admin would.
func labCerts(t *testing.T) string {
	t.Helper()
	testutil.Require(t, "openssl")
	dir := t.TempDir()
	for _, args := range [][]string{{"ca", dir}, {"server", dir, "berth-test-host"}, {"client", dir, "alice"}} {
		if out, err := exec.Command("../scripts/gen-certs", args...).CombinedOutput(); err != nil {
			t.Fatalf("gen-certs %v: %v\n%s", args, err, out)
		}
	}
	return dir
}

// TestRemoteTLS: berthd on tcp:// with --tlsverify serves clients that
// show a certificate of the lab CA, berth and the docker CLI both, and
// refuses at the handshake everyone else: no certificate, another CA's,
// an expired one, TLS 1.1, plain HTTP.
func TestRemoteTLS(t *testing.T) {
	t.Parallel()
	certs := labCerts(t)
	port := freePort(t, "tcp")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	d := startDaemonWith(t, "-H", "tcp://"+addr, "--tlsverify", "--tlscacert", filepath.Join(certs, "ca.pem"),
		"--tlscert", filepath.Join(certs, "server-cert.pem"), "--tlskey", filepath.Join(certs, "server-key.pem"))
	d.dockerOK(t, "import", busyboxTar(t), "busybox")
	alice := filepath.Join(certs, "alice")

	// berth's own flags, and the DOCKER_CERT_PATH layout with DOCKER_TLS_VERIFY.
	out, err := d.berth(t, "", "-H", "tcp://"+addr, "--tlsverify", "--tlscacert", filepath.Join(alice, "ca.pem"),
		"--tlscert", filepath.Join(alice, "cert.pem"), "--tlskey", filepath.Join(alice, "key.pem"), "run", "--rm", "busybox", "echo", "over tls")
	if err != nil || out != "over tls\n" {
		t.Errorf("berth --tlsverify run: %v %q", err, out)
	}
	remote := func(cli string, args ...string) (string, error) {
		cmd := exec.Command(cli, args...)
		cmd.Env = append(os.Environ(), "DOCKER_HOST=tcp://"+addr, "BERTH_HOST=tcp://"+addr, "DOCKER_TLS_VERIFY=1",
			"DOCKER_CERT_PATH="+alice, "DOCKER_CONFIG="+t.TempDir())
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	if out, err := remote(testutil.Build(t, "./cmd/client", false), "run", "--rm", "busybox", "echo", "berth env"); err != nil || out != "berth env\n" {
		t.Errorf("berth with DOCKER_TLS_VERIFY, DOCKER_CERT_PATH: %v %q", err, out)
	}
	if out, err := remote(testutil.Require(t, "docker"), "run", "--rm", "busybox", "echo", "docker over tls"); err != nil || out != "docker over tls\n" {
		t.Errorf("docker CLI over TLS: %v %q", err, out)
	}
	// Without --tlsverify, the client speaks plain HTTP, which berthd refuses.
	if out, err := d.berth(t, "", "-H", "tcp://"+addr, "version"); err == nil {
		t.Errorf("plain client against the TLS port: %q", out)
	}

	ca := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ca.AppendCertsFromPEM(caPEM)
	good, err := tls.LoadX509KeyPair(filepath.Join(alice, "cert.pem"), filepath.Join(alice, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ping := func(cfg *tls.Config) (string, error) {
		cfg.RootCAs = ca
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := c.Get("https://" + addr + "/_ping")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if out, err := ping(&tls.Config{Certificates: []tls.Certificate{good}}); err != nil || out != "OK" {
		t.Fatalf("ping with alice's certificate: %v %q", err, out)
	}
	otherCA := filepath.Join(t.TempDir(), "other")
	for _, args := range [][]string{{"ca", otherCA}, {"client", otherCA, "mallory"}} {
		if out, err := exec.Command("../scripts/gen-certs", args...).CombinedOutput(); err != nil {
			t.Fatalf("gen-certs %v: %v\n%s", args, err, out)
		}
	}
	mallory, err := tls.LoadX509KeyPair(filepath.Join(otherCA, "mallory", "cert.pem"), filepath.Join(otherCA, "mallory", "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]*tls.Config{
		"no certificate":  {},
		"another CA's":    {Certificates: []tls.Certificate{mallory}},
		"expired":         {Certificates: []tls.Certificate{expiredClientCert(t, certs)}},
		"TLS 1.1":         {Certificates: []tls.Certificate{good}, MaxVersion: tls.VersionTLS11},
		"alice, TLS 1.2+": nil,
	} {
		if cfg == nil {
			continue
		}
		if out, err := ping(cfg); err == nil {
			t.Errorf("%s: served %q, want the handshake refused", name, out)
		}
	}
	// Plain HTTP to the TLS port gets Go's TLS server's 400, never the API.
	resp, err := http.Get("http://" + addr + "/_ping")
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(b), "OK") {
			t.Errorf("plain HTTP: %s %q", resp.Status, b)
		}
	}
}

// expiredClientCert is a client certificate of the lab CA that expired
// an hour ago (openssl cannot make one).
func expiredClientCert(t *testing.T, certs string) tls.Certificate {
	t.Helper()
	caPair, err := tls.LoadX509KeyPair(filepath.Join(certs, "ca.pem"), filepath.Join(certs, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caPair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "alice"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caPair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// TestPlainTCPRefused: without --tlsverify berthd will not listen on TCP,
// loopback included, and says why.
func TestPlainTCPRefused(t *testing.T) {
	testutil.RequiresRoot(t)
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command(testutil.Build(t, "./cmd/daemon", true), "--root", filepath.Join(dir, "root"),
		"-H", fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")), "--config-file", os.DevNull,
		"--cgroup-parent", "/berth-itest-plaintcp")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "plain TCP would give root") || !strings.Contains(string(out), "--tlsverify") {
		t.Errorf("berthd -H tcp:// without TLS: %v\n%s", err, out)
	}
	// A missing CA is named.
	certs := labCerts(t)
	cmd = exec.Command(testutil.Build(t, "./cmd/daemon", true), "--root", filepath.Join(dir, "root"),
		"-H", fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t, "tcp")), "--config-file", os.DevNull, "--tlsverify",
		"--tlscacert", filepath.Join(dir, "nope.pem"), "--tlscert", filepath.Join(certs, "server-cert.pem"),
		"--tlskey", filepath.Join(certs, "server-key.pem"), "--cgroup-parent", "/berth-itest-plaintcp")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "nope.pem") {
		t.Errorf("berthd --tlsverify with a missing CA: %v\n%s", err, out)
	}
}

// TestInstallUnits: make install's files under a DESTDIR pass
// `systemd-analyze verify`; uninstall removes them and keeps /etc/berth
// unless PURGE=1.
func TestInstallUnits(t *testing.T) {
	t.Parallel()
	sa := testutil.Require(t, "systemd-analyze")
	dest := t.TempDir()
	install := func(action string, env ...string) {
		t.Helper()
		cmd := exec.Command("../scripts/install.sh", action)
		cmd.Env = append(append(os.Environ(), "DESTDIR="+dest, "PREFIX=/usr/local"), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("install.sh %s: %v\n%s", action, err, out)
		}
	}
	if _, err := os.Stat("../bin/berthd"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("bin/berthd is not built: make test builds it before the tests")
		}
		t.Skip("bin/berthd is not built (make test builds it)")
	}
	install("install")
	units := "/usr/local/lib/systemd/system/"
	for _, f := range []string{"/usr/local/bin/berthd", "/usr/local/bin/berth", "/usr/local/bin/berth-monitor", units + "berthd.service", units + "berthd.socket", "/etc/berth/daemon.json"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	svc, err := os.ReadFile(filepath.Join(dest, units, "berthd.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/local/bin/berthd -H fd://", "Type=notify", "KillMode=process", "Delegate=yes"} {
		if !strings.Contains(string(svc), want) {
			t.Errorf("berthd.service has no %q", want)
		}
	}
	// verify resolves the units' dependencies (sysinit.target...) in the
	// root: the host's own units stand in for a real system's.
	cp := exec.Command("cp", "-a", "/usr/lib/systemd/system", filepath.Join(dest, "usr/lib/systemd/"))
	if err := os.MkdirAll(filepath.Join(dest, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	out, err := exec.Command(sa, "verify", "--root="+dest, units+"berthd.service", units+"berthd.socket").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	install("uninstall")
	for _, f := range []string{"berthd", "berth", "berth-monitor"} {
		if _, err := os.Stat(filepath.Join(dest, "usr/local/bin", f)); err == nil {
			t.Errorf("uninstall left %s", f)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, "etc/berth/daemon.json")); err != nil {
		t.Errorf("uninstall removed the configuration: %v", err)
	}
	install("uninstall", "PURGE=1")
	if _, err := os.Stat(filepath.Join(dest, "etc/berth")); err == nil {
		t.Error("PURGE=1 left /etc/berth")
	}
}
