package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-containers/berth/internal/testutil"
)

// TestBerthCLIImages: the berth client's image and system commands
// against berthd and a registry with a password.
func TestBerthCLIImages(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{Auth: true})
	if out := d.berthOK(t, "version"); !strings.Contains(out, "Server: berth") {
		t.Errorf("berth version:\n%s", out)
	}
	if out := d.berthOK(t, "info"); !strings.Contains(out, "Images: 0") {
		t.Errorf("berth info:\n%s", out)
	}
	tarPath := busyboxTar(t)
	if out := d.berthOK(t, "import", tarPath, "berth/busybox:1"); !strings.HasPrefix(out, "sha256:") {
		t.Errorf("berth import: %q", out)
	}
	ref := reg.Addr + "/berth/busybox:1"
	d.berthOK(t, "tag", "berth/busybox:1", ref)
	if out := d.berthOK(t, "images", "--filter", "reference=berth/*", "--format", "{{.Repository}}:{{.Tag}}"); out != "berth/busybox:1\n" {
		t.Errorf("images --filter --format: %q", out)
	}
	if out := d.berthOK(t, "images"); !strings.HasPrefix(out, "REPOSITORY") || strings.Count(out, "\n") != 3 {
		t.Errorf("images:\n%s", out)
	}
	if out, err := d.berth(t, "", "push", ref); err == nil {
		t.Errorf("push without login succeeded:\n%s", out)
	}
	if out, err := d.berth(t, "wrong\n", "login", reg.Addr, "-u", reg.User, "--password-stdin"); err == nil || strings.Contains(out, "wrong\n") {
		t.Errorf("login with a wrong password: %v\n%s", err, out)
	}
	if out, err := d.berth(t, reg.Password+"\n", "login", reg.Addr, "-u", reg.User, "--password-stdin"); err != nil || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("berth login: %v\n%s", err, out)
	}
	cfg, err := os.ReadFile(filepath.Join(filepath.Dir(d.sock), "berth-client", "config.json"))
	if err != nil || !strings.Contains(string(cfg), reg.Addr) {
		t.Errorf("the login was not stored with the client: %v %s", err, cfg)
	}
	if out := d.berthOK(t, "push", ref); !strings.Contains(out, "digest: sha256:") {
		t.Errorf("berth push:\n%s", out)
	}
	d.berthOK(t, "rmi", ref, "berth/busybox:1")
	if out := d.berthOK(t, "images", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("images after rmi: %q", out)
	}
	if out := d.berthOK(t, "pull", ref); !strings.Contains(out, "Pull complete") {
		t.Errorf("berth pull:\n%s", out)
	}
	if out := d.berthOK(t, "images"); !strings.Contains(out, reg.Addr+"/berth/busybox") {
		t.Errorf("berth images:\n%s", out)
	}
	if out := d.berthOK(t, "image", "inspect", ref); !strings.Contains(out, `"Os": "linux"`) {
		t.Errorf("berth image inspect:\n%s", out)
	}
	archive := filepath.Join(t.TempDir(), "saved.tar")
	d.berthOK(t, "save", "-o", archive, ref)
	d.berthOK(t, "rmi", ref)
	if out := d.berthOK(t, "load", "-i", archive); !strings.Contains(out, "Loaded image: "+ref) {
		t.Errorf("berth load:\n%s", out)
	}
	if out := d.berthOK(t, "image", "prune", "-a", "-f"); !strings.Contains(out, "deleted: sha256:") {
		t.Errorf("berth image prune:\n%s", out)
	}
	if out, err := d.berth(t, "", "rmi", "nosuch"); err == nil || !strings.Contains(out, "No such image: nosuch") || strings.Count(out, "Error response") != 1 {
		t.Errorf("rmi of an unknown image: %v\n%s", err, out)
	}
	d.berthOK(t, "logout", reg.Addr)
}
