package testutil

import (
	"encoding/json"
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

var busyboxApplets = []string{"sh", "true", "false", "cat", "echo", "ls", "id", "hostname", "sleep", "ps", "mount", "touch", "mkdir", "env", "mknod", "readlink", "grep", "stat"}

var builds struct {
	sync.Mutex
	paths map[string]string
}

// Build builds the package at pkg (a path from the module root, such as
// ./cmd/daemon) once per test binary and returns the binary's path, linked
// statically when static is set.
func Build(t testing.TB, pkg string, static bool) string {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	if p, ok := builds.paths[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "berth-build-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	_, self, _, _ := runtime.Caller(0)
	args := []string{"build", "-o", out}
	if static {
		// As the Makefile builds: runs inside containers, which have no
		// dynamic loader (exec runs berthd there).
		args = append(args, "-tags", "osusergo,netgo", "-ldflags", "-linkmode external -extldflags -static")
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = filepath.Join(filepath.Dir(self), "..", "..")
	cmd.Env = os.Environ()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v: %s", pkg, err, b)
	}
	if pkg == "./cmd/daemon" {
		buildMonitor(t, cmd.Dir, filepath.Join(dir, "berth-monitor"))
	}
	if builds.paths == nil {
		builds.paths = map[string]string{}
	}
	builds.paths[pkg] = out
	return out
}

// buildMonitor builds berth-monitor (cmd/monitor) at out, beside a berthd
// that Build made, where berthd looks for it; flags as in the Makefile.
func buildMonitor(t testing.TB, root, out string) {
	t.Helper()
	cmd := exec.Command("cc", "-Os", "-static", "-s", "-Wall", "-Wextra", "-Werror", "-D_FORTIFY_SOURCE=2",
		"-o", out, filepath.Join(root, "cmd", "monitor", "monitor.c"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build berth-monitor: %v: %s", err, b)
	}
}

// RemoveBuilds deletes the binaries Build made; TestMain calls it last.
func RemoveBuilds() {
	builds.Lock()
	defer builds.Unlock()
	for _, p := range builds.paths {
		os.RemoveAll(filepath.Dir(p))
	}
	builds.paths = nil
}

// Probe returns the static probe binary (internal/testutil/probe).
func Probe(t testing.TB) string { return Build(t, "./internal/testutil/probe", true) }

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
