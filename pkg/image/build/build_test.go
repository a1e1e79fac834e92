package build

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

func TestExposedPorts(t *testing.T) {
	for spec, want := range map[string]string{
		"80": "80/tcp", "53/udp": "53/udp", "8000-8002": "8000/tcp 8001/tcp 8002/tcp", "9/SCTP": "9/sctp",
	} {
		got, err := exposedPorts(spec)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("%s: %v, %v; want %s", spec, got, err, want)
		}
	}
	for _, bad := range []string{"http", "80/icmp", "9-1", "70000"} {
		if _, err := exposedPorts(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestCommandLineAndEnv(t *testing.T) {
	st := &stage{cfg: &v1.ConfigFile{Config: v1.Config{Env: []string{"A=1", "PATH=/bin"}}}, args: []string{"A=arg", "B=2"}}
	shell := instructions.ShellDependantCmdLine{CmdLine: []string{"echo $A"}, PrependShell: true}
	if got := commandLine(st, shell); !slices.Equal(got, []string{"/bin/sh", "-c", "echo $A"}) {
		t.Errorf("shell form: %q", got)
	}
	st.cfg.Config.Shell = []string{"/bin/bash", "-ec"}
	if got := commandLine(st, shell); !slices.Equal(got, []string{"/bin/bash", "-ec", "echo $A"}) {
		t.Errorf("shell form after SHELL: %q", got)
	}
	exec := instructions.ShellDependantCmdLine{CmdLine: []string{"a", "b c"}}
	if got := commandLine(st, exec); !slices.Equal(got, []string{"a", "b c"}) {
		t.Errorf("exec form: %q", got)
	}
	// ENV wins over an ARG of the same name, as in Docker.
	if got := st.env(); !slices.Equal(got, []string{"A=1", "PATH=/bin", "B=2"}) {
		t.Errorf("env: %q", got)
	}
	if got := setEnv([]string{"A=1", "B=2"}, "A", "3"); !slices.Equal(got, []string{"A=3", "B=2"}) {
		t.Errorf("setEnv: %q", got)
	}
	if v, ok := envGetter([]string{"A=1", "A=2"}).Get("A"); !ok || v != "2" {
		t.Errorf("envGetter: the last value wins, got %q", v)
	}
}

// contextDir makes a context directory; "->" values are symlinks.
func contextDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestResolveSources: wildcards match inside the root only, and a path or
// symlink out of the context is refused, naming the source.
func TestResolveSources(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := contextDir(t, map[string]string{
		"a.txt": "a", "b.txt": "b", "src/c.txt": "c", "src/deep/d.txt": "d",
		"abs": "->" + outside, "rel": "->../../../../../../../../" + outside, "inside": "->src/c.txt",
	})
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	names := func(srcs []source) string {
		var out []string
		for _, s := range srcs {
			out = append(out, s.rel)
		}
		return strings.Join(out, " ")
	}
	for pattern, want := range map[string]string{
		"*.txt": "a.txt b.txt", "src/*.txt": "src/c.txt", "src/*": "src/c.txt src/deep", "/a.txt": "a.txt", ".": ".", "inside": "inside",
	} {
		got, _, err := resolveSources(root, []string{pattern}, true)
		if err != nil || names(got) != want {
			t.Errorf("%s: %q, %v; want %q", pattern, names(got), err, want)
		}
	}
	for src, want := range map[string]string{
		"../secret": "forbidden path outside the build context", "src/../../x": "forbidden path outside the build context",
		"abs": "leads outside the build context", "rel": "leads outside the build context",
		"missing": "file not found in build context", "*.none": "no source files were specified",
	} {
		if _, _, err := resolveSources(root, []string{src}, true); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", src, err, want)
		}
	}
}

// TestHashSources: the hash follows contents, names and modes, not times.
func TestHashSources(t *testing.T) {
	dir := contextDir(t, map[string]string{"app/a": "a", "app/b": "b", "app/l": "->a"})
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	hash := func() string {
		srcs, _, err := resolveSources(root, []string{"app"}, true)
		if err != nil {
			t.Fatal(err)
		}
		h, err := hashSources(srcs)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	first := hash()
	if err := os.Chtimes(filepath.Join(dir, "app", "a"), time.Unix(0, 0), time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	if hash() != first {
		t.Error("a new mtime changed the hash")
	}
	for _, change := range []func() error{
		func() error { return os.WriteFile(filepath.Join(dir, "app", "a"), []byte("A"), 0o644) },
		func() error { return os.Chmod(filepath.Join(dir, "app", "b"), 0o755) },
		func() error {
			os.Remove(filepath.Join(dir, "app", "l"))
			return os.Symlink("b", filepath.Join(dir, "app", "l"))
		},
		func() error { return os.Rename(filepath.Join(dir, "app", "b"), filepath.Join(dir, "app", "c")) },
	} {
		before := hash()
		if err := change(); err != nil {
			t.Fatal(err)
		}
		if hash() == before {
			t.Error("a change left the hash as it was")
		}
	}
}

// TestApplyIgnore: .dockerignore removes files and directories, "!"
// lets some back in.
func TestApplyIgnore(t *testing.T) {
	dir := contextDir(t, map[string]string{
		".dockerignore": "*.log\nbuild\ndocs/*\n!docs/keep.md\n",
		"app.go":        "", "debug.log": "", "build/out": "", "docs/a.md": "", "docs/keep.md": "",
	})
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	bc := &buildContext{dir: dir, root: root}
	if err := bc.applyIgnore(); err != nil {
		t.Fatal(err)
	}
	for name, kept := range map[string]bool{"app.go": true, ".dockerignore": true, "debug.log": false, "build": false, "docs/a.md": false, "docs/keep.md": true} {
		if _, err := os.Lstat(filepath.Join(dir, name)); (err == nil) != kept {
			t.Errorf("%s: kept %v, want %v", name, err == nil, kept)
		}
	}
}
