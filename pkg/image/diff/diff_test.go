package diff_test

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/image/diff"
)

// TestWriteOverlayFormat: whiteouts, opaque dirs, hardlinks, symlinks and
// xattrs of an overlay upper dir become OCI layer entries, deterministically.
func TestWriteOverlayFormat(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	os.MkdirAll(filepath.Join(dir, "opaque"), 0o755)
	os.WriteFile(filepath.Join(dir, "etc/a"), []byte("A"), 0o640)
	os.Link(filepath.Join(dir, "etc/a"), filepath.Join(dir, "etc/b"))
	os.Symlink("/etc/a", filepath.Join(dir, "link"))
	if err := unix.Mknod(filepath.Join(dir, "etc/gone"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "opaque"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "etc/a"), "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	var first, second bytes.Buffer
	if err := diff.Write(&first, dir); err != nil {
		t.Fatal(err)
	}
	if err := diff.Write(&second, dir); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Error("two writes of the same directory differ")
	}
	var got []string
	tr := tar.NewReader(&first)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		e := h.Name + ":" + string(h.Typeflag)
		if h.Linkname != "" {
			e += ">" + h.Linkname
		}
		if v, ok := h.PAXRecords["SCHILY.xattr.user.k"]; ok {
			e += "[" + v + "]"
		}
		got = append(got, e)
	}
	want := "etc/:5 etc/a:0[v] etc/b:1>etc/a etc/.wh.gone:0 link:2>/etc/a opaque/:5 opaque/.wh..wh..opq:0"
	if strings.Join(got, " ") != want {
		t.Errorf("entries\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}
