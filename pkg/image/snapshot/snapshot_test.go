package snapshot_test

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/image/snapshot"
	"github.com/berth-containers/berth/pkg/image/unpack"
)

type file struct{ name, body, link string }

// makeLayer unpacks a layer tar (in overlay format) into a directory.
func makeLayer(t *testing.T, files ...file) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(f.body))}
		switch {
		case strings.HasSuffix(f.name, "/"):
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		case f.link != "":
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, f.link, 0
		}
		tw.WriteHeader(h)
		tw.Write([]byte(f.body))
	}
	tw.Close()
	dir := t.TempDir()
	if _, err := unpack.Unpack(&buf, dir, unpack.Options{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func drivers(t *testing.T) []snapshot.Driver {
	ds := []snapshot.Driver{snapshot.Copy{}}
	if snapshot.OverlaySupported() {
		ds = append(ds, snapshot.Overlay{})
	} else if os.Getenv("CI") == "true" {
		t.Error("overlayfs is missing on this CI machine")
	}
	return ds
}

// TestConformance: both drivers give the same view of the same layers,
// keep the container's writes away from the layers, and clean up.
func TestConformance(t *testing.T) {
	testutil.RequiresRoot(t)
	layers := []string{
		makeLayer(t, file{name: "etc/passwd", body: "1"}, file{name: "etc/hosts", body: "h"},
			file{name: "dir/a", body: "a"}, file{name: "dir/b", body: "b"},
			file{name: "usr/lib/libc", body: "c"}, file{name: "lib", link: "usr/lib"}, file{name: "keep/x", body: "x"}),
		makeLayer(t, file{name: "etc/passwd", body: "2"}, file{name: "etc/.wh.hosts"},
			file{name: "dir/"}, file{name: "dir/.wh..wh..opq"}, file{name: "dir/new", body: "n"}),
		makeLayer(t, file{name: "keep/y", body: "y"}),
	}
	want := "dir/ dir/new=n etc/ etc/passwd=2 keep/ keep/x=x keep/y=y lib->usr/lib usr/ usr/lib/ usr/lib/libc=c"
	for _, d := range drivers(t) {
		t.Run(d.Name(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "snap")
			rootfs, err := d.Mount(layers, dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { snapshot.Remove(d, dir) })
			if got := view(t, rootfs); got != want {
				t.Errorf("view\n got %s\nwant %s", got, want)
			}
			before := []string{view(t, layers[0]), view(t, layers[1]), view(t, layers[2])}
			// The container writes, deletes and replaces.
			os.WriteFile(filepath.Join(rootfs, "etc/new"), []byte("w"), 0o644)
			os.Remove(filepath.Join(rootfs, "etc/passwd"))
			os.RemoveAll(filepath.Join(rootfs, "keep"))
			for i, l := range layers {
				if got := view(t, l); got != before[i] {
					t.Errorf("layer %d changed by the container:\n got %s\nwant %s", i, got, before[i])
				}
			}
			// A restart mounts again and keeps the writes.
			if err := d.Unmount(dir); err != nil {
				t.Fatal(err)
			}
			if rootfs, err = d.Mount(layers, dir); err != nil {
				t.Fatal(err)
			}
			// Mounting a mounted snapshot is a no-op: one Unmount releases it.
			if again, err := d.Mount(layers, dir); err != nil || again != rootfs {
				t.Fatalf("second mount: %q, %v", again, err)
			}
			if got, want := view(t, rootfs), "dir/ dir/new=n etc/ etc/new=w lib->usr/lib usr/ usr/lib/ usr/lib/libc=c"; got != want {
				t.Errorf("after remount\n got %s\nwant %s", got, want)
			}
			if err := snapshot.Remove(d, dir); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("snapshot dir left: %v", err)
			}
			if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), dir) {
				t.Errorf("mount of %s left", dir)
			}
		})
	}
}

// view lists a tree as "name=content", "dir/", "link->target".
func view(t *testing.T, root string) string {
	t.Helper()
	var out []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out = append(out, rel+"->"+l)
		case fi.IsDir():
			out = append(out, rel+"/")
		case fi.Mode()&os.ModeCharDevice != 0:
			out = append(out, rel+"(whiteout)")
		default:
			b, _ := os.ReadFile(p)
			out = append(out, rel+"="+string(b))
		}
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, " ")
}
