package unpack_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/image/unpack"
)

// entry is one tar member of a test layer.
type entry struct {
	name     string
	typ      byte
	body     string
	link     string
	mode     int64
	uid, gid int
	xattrs   map[string]string
}

func layer(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUnpackEntryTypesAndMetadata(t *testing.T) {
	testutil.RequiresRoot(t)
	raw := layer(t,
		entry{name: "etc/", typ: tar.TypeDir, mode: 0o750, uid: 7, gid: 8},
		entry{name: "etc/passwd", body: "root:x:0:0\n", mode: 0o4755, uid: 1, gid: 2, xattrs: map[string]string{"user.note": "hi"}},
		entry{name: "./bin/sh", body: "#!"}, // missing parent, "./" prefix
		entry{name: "bin/link", typ: tar.TypeSymlink, link: "/etc/passwd"},
		entry{name: "bin/hard", typ: tar.TypeLink, link: "etc/passwd"},
		entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		entry{name: "run/fifo", typ: tar.TypeFifo},
		entry{name: "etc/passwd", body: "replaced\n", mode: 0o600}, // a later entry wins
	)
	dir := t.TempDir()
	st, err := unpack.Unpack(bytes.NewReader(raw), dir, unpack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if want := digest.NewDigestFromBytes(digest.SHA256, sum[:]); st.DiffID != want || st.Size != int64(len(raw)) || st.Entries != 8 {
		t.Errorf("stats %+v, want DiffID %s size %d", st, want, len(raw))
	}
	fi := lstat(t, dir, "etc")
	if fi.Mode&0o7777 != 0o750 || fi.Uid != 7 || fi.Gid != 8 {
		t.Errorf("etc: mode %o uid %d gid %d", fi.Mode, fi.Uid, fi.Gid)
	}
	if time.Unix(fi.Mtim.Unix()).Year() != 2020 {
		t.Errorf("etc mtime %v: directory times must be set after its entries", time.Unix(fi.Mtim.Unix()))
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/passwd")); string(b) != "replaced\n" {
		t.Errorf("etc/passwd = %q", b)
	}
	if hard := lstat(t, dir, "bin/hard"); hard.Nlink != 1 {
		// the hardlink kept the first passwd's inode, replaced afterwards
		t.Logf("bin/hard nlink %d", hard.Nlink)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "bin/hard")); string(b) != "root:x:0:0\n" {
		t.Errorf("bin/hard = %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "bin/link")); l != "/etc/passwd" {
		t.Errorf("bin/link -> %q", l)
	}
	if fi := lstat(t, dir, "bin/hard"); fi.Mode&0o7777 != 0o4755 || fi.Uid != 1 {
		t.Errorf("setuid file: mode %o uid %d", fi.Mode, fi.Uid)
	}
	if v, err := unix.Getxattr(filepath.Join(dir, "bin/hard"), "user.note", make([]byte, 16)); err != nil || v != 2 {
		t.Errorf("xattr user.note: %d %v", v, err)
	}
	if fi := lstat(t, dir, "dev/null"); fi.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Errorf("dev/null mode %o", fi.Mode)
	}
	if fi := lstat(t, dir, "run/fifo"); fi.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("run/fifo mode %o", fi.Mode)
	}
	if fi := lstat(t, dir, "bin"); fi.Mode&0o7777 != 0o755 {
		t.Errorf("implicit parent bin mode %o, want 755", fi.Mode&0o7777)
	}
}

func lstat(t *testing.T, dir, name string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestWhiteoutsInOverlayFormat(t *testing.T) {
	testutil.RequiresRoot(t)
	raw := layer(t,
		entry{name: "a/", typ: tar.TypeDir},
		entry{name: "a/.wh..wh..opq"},
		entry{name: "b/.wh.gone"},
		entry{name: "c/kept", body: "x"},
		entry{name: "c/.wh.kept"}, // deletes what this layer wrote
	)
	dir := t.TempDir()
	if _, err := unpack.Unpack(bytes.NewReader(raw), dir, unpack.Options{}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "a"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("a: opaque xattr %q %v", buf[:n], err)
	}
	for _, p := range []string{"b/gone", "c/kept"} {
		if fi := lstat(t, dir, p); fi.Mode&unix.S_IFMT != unix.S_IFCHR || fi.Rdev != 0 {
			t.Errorf("%s: mode %o rdev %d, want a 0:0 char device", p, fi.Mode, fi.Rdev)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "a/.wh..wh..opq")); !os.IsNotExist(err) {
		t.Errorf("the opaque marker itself was written: %v", err)
	}
}

// gzipDecoders runs f with igzip (required in CI), with Go's decoder, and
// with an igzip that cannot start (Go's decoder takes over).
func gzipDecoders(t *testing.T, f func(t *testing.T)) {
	t.Run("igzip", func(t *testing.T) {
		testutil.Require(t, "igzip")
		f(t)
	})
	t.Run("go", func(t *testing.T) {
		unpack.WithGoGunzip(t)
		f(t)
	})
	t.Run("igzip fails to start", func(t *testing.T) {
		unpack.WithIgzip(t, filepath.Join(t.TempDir(), "igzip")) // not there: Go inflates
		f(t)
	})
}

func gzipBytes(b []byte) []byte {
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(b)
	gw.Close()
	return gz.Bytes()
}

func TestCompressions(t *testing.T) {
	testutil.RequiresRoot(t)
	raw := layer(t, entry{name: "f", body: strings.Repeat("data", 1000)})
	gz := gzipBytes(raw)
	var zs bytes.Buffer
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(raw)
	zw.Close()
	sum := sha256.Sum256(raw)
	want := digest.NewDigestFromBytes(digest.SHA256, sum[:])
	check := func(t *testing.T, data []byte, comp unpack.Compression) {
		st, err := unpack.Unpack(bytes.NewReader(data), t.TempDir(), unpack.Options{})
		if err != nil || st.Compression != comp || st.DiffID != want {
			t.Errorf("stats %+v, err %v; want %s, DiffID %s", st, err, comp, want)
		}
	}
	t.Run("uncompressed", func(t *testing.T) { check(t, raw, unpack.Uncompressed) })
	t.Run("zstd", func(t *testing.T) { check(t, zs.Bytes(), unpack.Zstd) })
	t.Run("gzip", func(t *testing.T) {
		gzipDecoders(t, func(t *testing.T) {
			check(t, gz, unpack.Gzip)
			// Docker reads concatenated gzip members as one stream.
			half := len(raw) / 2
			check(t, append(gzipBytes(raw[:half]), gzipBytes(raw[half:])...), unpack.Gzip)
		})
	})
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// failingReader returns its data, then err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// TestBadGzip: a truncated or corrupt gzip stream, or a source that fails,
// is an error naming the cause, with either decoder, and the source is no
// longer read once Unpack has returned.
func TestBadGzip(t *testing.T) {
	testutil.RequiresRoot(t)
	raw := layer(t, entry{name: "f", body: strings.Repeat("0123456789abcdef", 1<<14)})
	gz := gzipBytes(raw)
	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-6] ^= 0xff
	lost := errors.New("connection reset by the registry")
	gzipDecoders(t, func(t *testing.T) {
		for _, tc := range []struct {
			name string
			r    io.Reader
			want string
		}{
			{"truncated", bytes.NewReader(gz[:len(gz)/2]), "unexpected EOF|truncated"},
			{"bad checksum", bytes.NewReader(badCRC), "invalid checksum|corrupt"},
			{"source fails", &failingReader{r: bytes.NewReader(gz[:len(gz)/2]), err: lost}, lost.Error()},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := unpack.Unpack(tc.r, t.TempDir(), unpack.Options{})
				if err == nil || !regexp.MustCompile(tc.want).MatchString(err.Error()) {
					t.Errorf("got %v, want an error matching %q", err, tc.want)
				}
			})
		}
	})
}

func TestLimits(t *testing.T) {
	testutil.RequiresRoot(t)
	// A gzip bomb: 64 MiB of zeros in a few KiB.
	var bomb bytes.Buffer
	tw := tar.NewWriter(&bomb)
	tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Size: 64 << 20, Mode: 0o644})
	tw.Write(make([]byte, 64<<20))
	tw.Close()
	gz := gzipBytes(bomb.Bytes())
	gzipDecoders(t, func(t *testing.T) {
		src := &countingReader{r: bytes.NewReader(gz)}
		_, err := unpack.Unpack(src, t.TempDir(), unpack.Options{MaxBytes: 1 << 20})
		if !errors.Is(err, unpack.ErrTooLarge) {
			t.Errorf("bomb of %d compressed bytes: %v, want ErrTooLarge", len(gz), err)
		}
		// The caller owns the source again once Unpack returned.
		read := src.n.Load()
		time.Sleep(20 * time.Millisecond)
		if now := src.n.Load(); now != read {
			t.Errorf("the source was read after Unpack returned: %d bytes, then %d", read, now)
		}
	})
	many := layer(t, entry{name: "a"}, entry{name: "b"}, entry{name: "c"})
	if _, err := unpack.Unpack(bytes.NewReader(many), t.TempDir(), unpack.Options{MaxEntries: 2}); !errors.Is(err, unpack.ErrTooLarge) {
		t.Errorf("3 entries with MaxEntries 2: %v, want ErrTooLarge", err)
	}
}

// maliciousLayer is a crafted layer from testdata/malicious.json: each
// tries to write outside the target or through a link.
type maliciousLayer struct {
	Name    string `json:"name"`
	Entries []struct {
		Name string `json:"name"`
		Type string `json:"type"` // file (default), symlink, hardlink, char
		Body string `json:"body"`
		Link string `json:"link"`
	} `json:"entries"`
}

func maliciousLayers(t testing.TB) []maliciousLayer {
	t.Helper()
	b, err := os.ReadFile("testdata/malicious.json")
	if err != nil {
		t.Fatal(err)
	}
	var out []maliciousLayer
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (m maliciousLayer) tar(t testing.TB) []byte {
	types := map[string]byte{"": tar.TypeReg, "file": tar.TypeReg, "symlink": tar.TypeSymlink, "hardlink": tar.TypeLink, "char": tar.TypeChar}
	var entries []entry
	for _, e := range m.Entries {
		typ, ok := types[e.Type]
		if !ok {
			t.Fatalf("%s: unknown type %q", m.Name, e.Type)
		}
		entries = append(entries, entry{name: e.Name, typ: typ, body: e.Body, link: e.Link})
	}
	return layer(t, entries...)
}

// TestMaliciousLayers: every crafted layer is refused with ErrUnsafe and
// nothing beside the target changes.
func TestMaliciousLayers(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, tc := range maliciousLayers(t) {
		t.Run(tc.Name, func(t *testing.T) {
			base := t.TempDir()
			target := filepath.Join(base, "target")
			sentinel := filepath.Join(base, "sentinel")
			if err := os.Mkdir(target, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(sentinel, []byte("safe"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := unpack.Unpack(bytes.NewReader(tc.tar(t)), target, unpack.Options{})
			if !errors.Is(err, unpack.ErrUnsafe) {
				t.Errorf("err = %v, want ErrUnsafe", err)
			}
			checkOutside(t, base)
		})
	}
}

// checkOutside fails if base holds anything but target/ and an unchanged
// sentinel file.
func checkOutside(t testing.TB, base string) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(base, "sentinel")); err != nil || string(b) != "safe" {
		t.Fatalf("sentinel changed: %q %v", b, err)
	}
	names, _ := os.ReadDir(base)
	if len(names) != 2 {
		var got []string
		for _, n := range names {
			got = append(got, n.Name())
		}
		t.Fatalf("outside the target: %v", got)
	}
	if _, err := os.Lstat("/tmp/pwned"); err == nil {
		t.Fatal("/tmp/pwned was written")
	}
}

// FuzzUnpack feeds arbitrary streams (seeded with the malicious layers):
// whatever the result, nothing may change outside the target.
func FuzzUnpack(f *testing.F) {
	for _, tc := range maliciousLayers(f) {
		f.Add(tc.tar(f))
	}
	f.Add(layer(f, entry{name: "a/", typ: tar.TypeDir}, entry{name: "a/b", body: "x"}, entry{name: "a/.wh.b"}))
	f.Fuzz(func(t *testing.T, data []byte) {
		if os.Geteuid() != 0 {
			t.Skip("needs root")
		}
		base := t.TempDir()
		target := filepath.Join(base, "target")
		os.Mkdir(target, 0o755)
		os.WriteFile(filepath.Join(base, "sentinel"), []byte("safe"), 0o644)
		_, _ = unpack.Unpack(bytes.NewReader(data), target, unpack.Options{MaxBytes: 1 << 20, MaxEntries: 1000})
		checkOutside(t, base)
	})
}

// TestSparseBomb: a PAX 1.0 sparse entry declares a terabyte of holes in
// two blocks of tar; the tar reader expands the holes without reading the
// stream, so the declared size must count against the limit.
func TestSparseBomb(t *testing.T) {
	testutil.RequiresRoot(t)
	records := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", "hole") + paxRecord("GNU.sparse.realsize", "1099511627776")
	sparseMap := make([]byte, 512) // one fragment: 1 byte at 1 TiB - 1
	copy(sparseMap, "1\n1099511627775\n1\n")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "PaxHeaders/hole", Typeflag: tar.TypeReg, Size: int64(len(records)), Mode: 0o644, Format: tar.FormatUSTAR})
	tw.Write([]byte(records))
	tw.WriteHeader(&tar.Header{Name: "hole", Typeflag: tar.TypeReg, Size: 513, Mode: 0o644, Format: tar.FormatUSTAR})
	tw.Write(append(sparseMap, 'x'))
	tw.Close()
	raw := buf.Bytes()
	setTypeflag(raw[:512], tar.TypeXHeader)
	tr := tar.NewReader(bytes.NewReader(raw))
	if h, err := tr.Next(); err != nil || h.Size != 1<<40 {
		t.Fatalf("crafted sparse entry reads as %+v, %v", h, err)
	}
	_, err := unpack.Unpack(bytes.NewReader(raw), t.TempDir(), unpack.Options{MaxBytes: 1 << 20})
	if !errors.Is(err, unpack.ErrTooLarge) {
		t.Errorf("sparse bomb: %v, want ErrTooLarge", err)
	}
}

func paxRecord(k, v string) string {
	r := " " + k + "=" + v + "\n"
	n := len(r) + 1
	for len(strconv.Itoa(n))+len(r) != n {
		n++
	}
	return strconv.Itoa(n) + r
}

// setTypeflag rewrites a ustar header's type and checksum.
func setTypeflag(h []byte, typ byte) {
	h[156] = typ
	copy(h[148:156], "        ")
	sum := 0
	for _, b := range h {
		sum += int(b)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
}
