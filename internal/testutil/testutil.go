package testutil

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// RequiresRoot skips a test for a developer without root, and fails it in
// CI (CI=true), where a missing prerequisite must never pass silently.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI runs as root")
	}
	t.Skip("needs root")
}

// Require fails (in CI) or skips (elsewhere) when a program is missing.
func Require(t testing.TB, program string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing: scripts/install-prereqs.sh installs it", program)
	}
	t.Skipf("%s is missing (scripts/install-prereqs.sh installs it)", program)
	return ""
}

// BusyboxPath is where Debian's busybox-static puts its binary.
const BusyboxPath = "/bin/busybox"

var busyboxApplets = []string{"sh", "true", "false", "cat", "echo", "ls", "id", "hostname", "sleep", "ps", "mount", "touch", "mkdir", "env"}

var probe struct {
	once sync.Once
	path string
	err  error
}

// Probe builds the static probe binary once per test binary and returns its path.
func Probe(t testing.TB) string {
	t.Helper()
	probe.once.Do(func() {
		dir, err := os.MkdirTemp("", "berth-probe-")
		if err != nil {
			probe.err = err
			return
		}
		probe.path = filepath.Join(dir, "probe")
		_, self, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", probe.path, "./probe")
		cmd.Dir = filepath.Dir(self)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			probe.err = fmt.Errorf("build probe: %v: %s", err, out)
		}
	})
	if probe.err != nil {
		t.Fatal(probe.err)
	}
	return probe.path
}

// Rootfs makes a busybox root filesystem with the probe at /probe in dir.
func Rootfs(t testing.TB, dir string) {
	t.Helper()
	Require(t, BusyboxPath)
	for _, d := range []string{"bin", "proc", "sys", "dev", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, BusyboxPath, filepath.Join(dir, "bin", "busybox"))
	copyFile(t, Probe(t), filepath.Join(dir, "probe"))
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// WriteSpec writes bundle/config.json.
func WriteSpec(t testing.TB, bundle string, s *specs.Spec) {
	t.Helper()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}
