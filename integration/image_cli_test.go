package integration

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	digest "github.com/opencontainers/go-digest"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/credentials"
	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/registry"
)

// imageCLI runs `berthd image --root ROOT ...` with its own Docker config dir.
type imageCLI struct {
	t         *testing.T
	bin, root string
	dockerCfg string
}

func newImageCLI(t *testing.T) *imageCLI {
	t.Helper()
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	return &imageCLI{t: t, bin: testutil.Build(t, "./cmd/daemon", true), root: filepath.Join(dir, "root"), dockerCfg: filepath.Join(dir, "docker")}
}

func (c *imageCLI) command(args ...string) *exec.Cmd {
	cmd := exec.Command(c.bin, append([]string{"image", "--root", c.root}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+c.dockerCfg)
	return cmd
}

func (c *imageCLI) run(stdin string, args ...string) (string, error) {
	cmd := c.command(args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *imageCLI) ok(args ...string) string {
	c.t.Helper()
	out, err := c.run("", args...)
	if err != nil {
		c.t.Fatalf("berthd image %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestImageCLI walks berthd's image command line through a registry with
// a password: push (refused, then with a stored login), pull, list, tag,
// save, load, remove.
func TestImageCLI(t *testing.T) {
	t.Parallel()
	c := newImageCLI(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{Auth: true})
	rootfs := t.TempDir()
	testutil.Rootfs(t, rootfs)
	tarPath := filepath.Join(t.TempDir(), "rootfs.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "-cf", tarPath, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	c.ok("import", tarPath, "berth/busybox")
	ref := reg.Addr + "/berth/busybox:v1"
	c.ok("tag", "berth/busybox", ref)

	if out, err := c.run("", "push", ref); err == nil || !strings.Contains(out, "401") && !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Errorf("push without login: %v %s", err, out)
	}
	// Logins are the client's (berth login); this command line reads them.
	if err := credentials.SaveLogin(c.dockerCfg, reg.Addr, reg.User, reg.Password); err != nil {
		t.Fatal(err)
	}
	c.ok("push", ref)
	c.ok("rm", ref)
	c.ok("rm", "berth/busybox")
	if out := c.ok("ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("images left after rm: %q", out)
	}
	out := c.ok("pull", ref)
	if !strings.Contains(out, "Pull complete") || !strings.Contains(out, "Digest: sha256:") {
		t.Errorf("pull output %q", out)
	}
	ls := c.ok("ls")
	if !strings.Contains(ls, reg.Addr+"/berth/busybox") || !strings.Contains(ls, "v1") {
		t.Errorf("ls after pull:\n%s", ls)
	}
	archive := filepath.Join(t.TempDir(), "bb.tar")
	c.ok("save", "-o", archive, ref)
	c.ok("rm", ref)
	if out := c.ok("load", "-i", archive); !strings.Contains(out, "Loaded image: "+ref) {
		t.Errorf("load output %q", out)
	}
	if out := c.ok("inspect", ref); !strings.Contains(out, `"Os": "linux"`) {
		t.Errorf("inspect output %q", out)
	}
	if out := c.ok("history", ref); !strings.Contains(out, "Imported from rootfs.tar") {
		t.Errorf("history output %q", out)
	}
	if out, err := c.run("", "pull", reg.Addr+"/no/such:image"); err == nil || !strings.Contains(out, "not found") && !strings.Contains(out, "UNAUTHORIZED") {
		t.Errorf("pull of an unknown image: %v %s", err, out)
	}
}

// TestKillNineDuringPull: a pull killed with SIGKILL at random moments
// leaves no image and no half-written blob; the next run of berthd cleans
// up and the same pull completes.
func TestKillNineDuringPull(t *testing.T) {
	t.Parallel()
	c := newImageCLI(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	img, err := random.Image(8<<20, 4)
	if err != nil {
		t.Fatal(err)
	}
	src := newImageStore(t)
	if _, err := src.Put(context.Background(), img, image.PutOptions{Names: []string{"big"}}); err != nil {
		t.Fatal(err)
	}
	ref := reg.Addr + "/big/image:v1"
	if _, err := registry.New(src).Push(context.Background(), "big", ref, nil, nil); err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, after := range []time.Duration{20 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond} {
		cmd := c.command("pull", ref)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(after)
		_ = cmd.Process.Kill()
		if err := cmd.Wait(); err != nil && strings.Contains(err.Error(), "killed") {
			killed++
		}
		checkStoreConsistent(t, c.root)
	}
	if killed == 0 {
		t.Fatal("every pull finished before its SIGKILL: the test checked nothing")
	}
	c.ok("pull", ref)
	checkStoreConsistent(t, c.root)
	if out := c.ok("ls"); !strings.Contains(out, reg.Addr+"/big/image") {
		t.Errorf("ls after the completed pull:\n%s", out)
	}
}

// checkStoreConsistent opens the store as the next berthd would, then
// checks that every recorded image has all its blobs and layers, and that
// no partial file survives.
func checkStoreConsistent(t *testing.T, root string) {
	t.Helper()
	db, err := image.OpenDB(root)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := image.New(root, db)
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "tmp", "*")); len(left) != 0 {
		t.Errorf("tmp/ holds %v after reopening", left)
	}
	imgs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		blobs := []digest.Digest{img.ID, img.Manifest}
		for _, l := range img.Layers {
			blobs = append(blobs, l.Digest)
		}
		for _, d := range blobs {
			f, err := s.Content().Open(d)
			if err != nil {
				t.Errorf("image %s: %v", img.ID, err)
				continue
			}
			dg := digest.SHA256.Digester()
			_, err = io.Copy(dg.Hash(), f)
			f.Close()
			if err != nil || dg.Digest() != d {
				t.Errorf("image %s: blob %s holds %s (%v)", img.ID, d, dg.Digest(), err)
			}
		}
		for _, dir := range s.LayerDirs(img) {
			if _, err := os.Stat(dir); err != nil {
				t.Errorf("image %s: layer %v", img.ID, err)
			}
		}
	}
}
