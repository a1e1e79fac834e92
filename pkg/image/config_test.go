package image_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-containers/berth/pkg/image"
)

func TestRunConfigOf(t *testing.T) {
	cfg := &v1.ConfigFile{Config: v1.Config{
		Entrypoint: []string{"/entry"}, Cmd: []string{"serve"}, Env: []string{"A=1", "B=2"},
		WorkingDir: "/app", User: "web", StopSignal: "SIGQUIT",
		ExposedPorts: map[string]struct{}{"80/tcp": {}}, Volumes: map[string]struct{}{"/data": {}},
	}}
	for _, tc := range []struct {
		name string
		o    image.Overrides
		args string
	}{
		{"image defaults", image.Overrides{}, "/entry serve"},
		{"cmd replaces Cmd", image.Overrides{Cmd: []string{"debug"}}, "/entry debug"},
		{"entrypoint drops Cmd", image.Overrides{Entrypoint: []string{"sh"}}, "sh"},
		{"both", image.Overrides{Entrypoint: []string{"sh"}, Cmd: []string{"-c", "x"}}, "sh -c x"},
	} {
		rc, err := image.RunConfigOf(cfg, tc.o)
		if err != nil || strings.Join(rc.Args, " ") != tc.args {
			t.Errorf("%s: args %q (%v), want %q", tc.name, rc.Args, err, tc.args)
		}
	}
	rc, _ := image.RunConfigOf(cfg, image.Overrides{Env: []string{"B=3", "C=4"}, User: "1:2"})
	if got := strings.Join(rc.Env, " "); got != image.DefaultPath+" A=1 B=3 C=4" {
		t.Errorf("env %q", got)
	}
	if rc.Cwd != "/app" || rc.User != "1:2" || rc.StopSignal != "SIGQUIT" || rc.ExposedPorts[0] != "80/tcp" || rc.Volumes[0] != "/data" {
		t.Errorf("run config %+v", rc)
	}
	if _, err := image.RunConfigOf(&v1.ConfigFile{}, image.Overrides{}); err == nil {
		t.Error("an image without a command and no override must be refused")
	}
}

func TestResolveUser(t *testing.T) {
	rootfs := t.TempDir()
	os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\nweb:x:1000:1000::/home/web:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(rootfs, "etc/group"), []byte("root:x:0:\nweb:x:1000:\nvideo:x:44:web\n"), 0o644)
	for spec, want := range map[string]string{"": "0:0[]", "web": "1000:1000[44]", "web:root": "1000:0[]", "7:8": "7:8[]"} {
		u, err := image.ResolveUser(rootfs, spec)
		got := fmt.Sprintf("%d:%d%v", u.UID, u.GID, u.AdditionalGids)
		if got != want {
			t.Errorf("ResolveUser(%q) = %q (%v), want %q", spec, got, err, want)
		}
	}
	if _, err := image.ResolveUser(rootfs, "nobody-here"); err == nil {
		t.Error("an unknown user name must be an error")
	}
	// /etc/passwd as a symlink out of the rootfs is read inside it.
	os.Remove(filepath.Join(rootfs, "etc/passwd"))
	os.Symlink("/../../../../etc/passwd", filepath.Join(rootfs, "etc/passwd"))
	if _, err := image.ResolveUser(rootfs, "root"); err == nil {
		t.Error("a passwd symlink leading out of the rootfs was followed to the host")
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                     "docker.io/library/busybox:latest",
		"alice/model:v1":              "docker.io/alice/model:v1",
		"docker.io/library/busybox:1": "docker.io/library/busybox:1",
		"localhost:5000/x/y":          "localhost:5000/x/y:latest",
		"127.0.0.1:5000/a@sha256:" + strings.Repeat("ab", 32): "127.0.0.1:5000/a@sha256:" + strings.Repeat("ab", 32),
	} {
		got, err := image.NormalizeName(in)
		if err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "a b", "x:y:z"} {
		if _, err := image.NormalizeName(bad); err == nil {
			t.Errorf("NormalizeName(%q) accepted", bad)
		}
	}
	for in, want := range map[string]string{
		"docker.io/library/busybox:latest": "busybox:latest",
		"docker.io/alice/model:v1":         "alice/model:v1",
		"localhost:5000/x/y:latest":        "localhost:5000/x/y:latest",
	} {
		if got := image.FamiliarName(in); got != want {
			t.Errorf("FamiliarName(%q) = %q, want %q", in, got, want)
		}
	}
}
