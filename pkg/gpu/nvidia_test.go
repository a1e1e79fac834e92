package gpu

import (
	"os"
	"path/filepath"
	"testing"
)

// TestResolveInRoot: a driver root's links resolve inside it, absolute
// ones too (merged /usr: /lib -> /usr/lib), and never reach the host.
func TestResolveInRoot(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755))
	must(os.Symlink("/usr/lib", filepath.Join(root, "lib")))
	must(os.WriteFile(filepath.Join(root, "usr/lib/libx.so.1.0"), nil, 0o644))
	must(os.Symlink("libx.so.1.0", filepath.Join(root, "usr/lib/libx.so.1")))
	must(os.Symlink("../../../../../../etc/hostname", filepath.Join(root, "usr/lib/libescape.so.1")))
	must(os.Symlink("/etc/hostname", filepath.Join(root, "usr/lib/libabs.so.1")))
	d := &driver{root: root}
	if got, err := d.resolve("/lib/libx.so.1"); err != nil || got != "/usr/lib/libx.so.1.0" {
		t.Errorf("resolve /lib/libx.so.1 = %q, %v; want /usr/lib/libx.so.1.0", got, err)
	}
	for _, p := range []string{"/usr/lib/libescape.so.1", "/usr/lib/libabs.so.1", "/usr/lib"} {
		if got, err := d.resolve(p); err == nil {
			t.Errorf("resolve %s = %q, want an error (the host's /etc/hostname is outside the root; a directory is no library)", p, got)
		}
	}
}
