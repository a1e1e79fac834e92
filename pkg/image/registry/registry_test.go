package registry_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-containers/berth/internal/testutil"
	"github.com/berth-containers/berth/pkg/credentials"
	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/registry"
)

func newClient(t *testing.T, reg *testutil.Registry) (*registry.Client, *image.Store) {
	t.Helper()
	s := testutil.ImageStore(t, "")
	c := registry.New(s)
	c.Transport = reg.Transport
	return c, s
}

func putRandom(t *testing.T, s *image.Store, name string, size, layers int64) *image.Image {
	t.Helper()
	img, err := random.Image(size, layers)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := s.Put(context.Background(), img, image.PutOptions{Names: []string{name}})
	if err != nil {
		t.Fatal(err)
	}
	return stored
}

// TestPushPullRoundTrip: an image pushed from one store and pulled into
// another keeps every digest; pushing the pulled image again reproduces
// them, and to another repository its layers are mounted, not uploaded.
func TestPushPullRoundTrip(t *testing.T) {
	t.Parallel()
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ctx := context.Background()
	a, sa := newClient(t, reg)
	b, sb := newClient(t, reg)
	src := putRandom(t, sa, "alice/model", 64<<10, 3)
	ref := reg.Addr + "/alice/model:v1"
	pushed, err := a.Push(ctx, "alice/model", ref, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pushed.String() != src.Manifest.String() {
		t.Errorf("pushed digest %s, stored manifest %s", pushed, src.Manifest)
	}
	pulled, err := b.Pull(ctx, ref, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pulled.ID != src.ID || pulled.Manifest != src.Manifest {
		t.Errorf("pulled %s (manifest %s), want %s (%s)", pulled.ID, pulled.Manifest, src.ID, src.Manifest)
	}
	for i, l := range pulled.Layers {
		if l.Digest != src.Layers[i].Digest {
			t.Errorf("layer %d: %s, want %s", i, l.Digest, src.Layers[i].Digest)
		}
		if _, err := os.Stat(sb.LayerDir(l.ChainID)); err != nil {
			t.Errorf("layer %d not unpacked: %v", i, err)
		}
	}
	if _, err := sb.Get(ref); err != nil {
		t.Errorf("pulled image not named %s: %v", ref, err)
	}
	// Push the pulled image to another repository: every layer is
	// mounted from alice/model, none uploaded.
	var statuses []string
	var mu sync.Mutex
	progress := func(p image.Progress) { mu.Lock(); statuses = append(statuses, p.Status); mu.Unlock() }
	again, err := b.Push(ctx, ref, reg.Addr+"/bob/copy:v1", nil, progress)
	if err != nil {
		t.Fatal(err)
	}
	if again != pushed {
		t.Errorf("re-push digest %s, want %s", again, pushed)
	}
	if got := strings.Join(statuses, ","); strings.Contains(got, "Pushing") || strings.Count(got, "Layer already exists") != 3 {
		t.Errorf("push statuses %q: want 3 mounted layers, none uploaded", got)
	}
	// By digest too.
	c, _ := newClient(t, reg)
	if img, err := c.Pull(ctx, reg.Addr+"/alice/model@"+pushed.String(), nil, nil); err != nil || img.ID != src.ID {
		t.Errorf("pull by digest: %v %v", img, err)
	}
}

func TestUnknownImage(t *testing.T) {
	t.Parallel()
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	c, s := newClient(t, reg)
	_, err := c.Pull(context.Background(), reg.Addr+"/nosuch/image:latest", nil, nil)
	if !errdefs.IsNotFound(err) {
		t.Errorf("pull of an unknown image: %v, want not found", err)
	}
	if imgs, _ := s.List(); len(imgs) != 0 {
		t.Errorf("store holds %d images after a failed pull", len(imgs))
	}
}

// TestTLSAndAuth: a registry with a test CA and htpasswd. Anonymous pushes
// and wrong passwords are refused with clear errors that never show the
// password; a login stored as the Docker CLI stores it works.
func TestTLSAndAuth(t *testing.T) {
	t.Parallel()
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{TLS: true, Auth: true})
	ctx := context.Background()
	c, s := newClient(t, reg)
	putRandom(t, s, "secret/app", 16<<10, 2)
	ref := reg.Addr + "/secret/app:v1"
	if _, err := c.Push(ctx, "secret/app", ref, nil, nil); !errdefs.IsUnauthorized(err) {
		t.Errorf("anonymous push: %v, want unauthenticated", err)
	}
	wrong := &authn.Basic{Username: reg.User, Password: "not-the-password"}
	err := c.Login(ctx, reg.Addr, wrong)
	if !errdefs.IsUnauthorized(err) || strings.Contains(err.Error(), "not-the-password") {
		t.Errorf("login with a wrong password: %v", err)
	}
	right := &authn.Basic{Username: reg.User, Password: reg.Password}
	if err := c.Login(ctx, reg.Addr, right); err != nil {
		t.Fatalf("login: %v", err)
	}
	cfgDir := t.TempDir()
	if err := credentials.SaveLogin(cfgDir, reg.Addr, reg.User, reg.Password); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(cfgDir, "config.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config.json: %v, mode %v; want 0600", err, fi.Mode())
	}
	auth, err := credentials.Authenticator(cfgDir, ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Push(ctx, "secret/app", ref, auth, nil); err != nil {
		t.Fatalf("push with the stored login: %v", err)
	}
	d, _ := newClient(t, reg)
	if _, err := d.Pull(ctx, ref, auth, nil); err != nil {
		t.Fatalf("pull with the stored login: %v", err)
	}
	if err := credentials.RemoveLogin(cfgDir, reg.Addr); err != nil {
		t.Fatal(err)
	}
	if auth, _ := credentials.Authenticator(cfgDir, ref); auth != authn.Anonymous {
		t.Errorf("after logout: %v, want anonymous", auth)
	}
	// Without the test CA the registry's certificate is refused.
	plain, _ := newClient(t, reg)
	plain.Transport = http.DefaultTransport
	if _, err := plain.Pull(ctx, ref, right, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("pull trusting only the system CAs: %v, want a certificate error", err)
	}
}

// TestKilledRegistryMidPull: the registry dies during a pull. The pull
// fails and leaves no image; after a restart the same pull completes.
func TestKilledRegistryMidPull(t *testing.T) {
	t.Parallel()
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ctx := context.Background()
	a, sa := newClient(t, reg)
	src := putRandom(t, sa, "big/image", 16<<20, 3)
	ref := reg.Addr + "/big/image:v1"
	if _, err := a.Push(ctx, "big/image", ref, nil, nil); err != nil {
		t.Fatal(err)
	}
	b, sb := newClient(t, reg)
	var once sync.Once
	kill := func(p image.Progress) {
		if p.Status == "Downloading" && p.Current > 0 {
			once.Do(reg.Kill)
		}
	}
	if _, err := b.Pull(ctx, ref, nil, kill); err == nil {
		t.Fatal("pull succeeded though the registry was killed")
	}
	if _, err := sb.Get(ref); !errdefs.IsNotFound(err) {
		t.Errorf("image recorded after a failed pull: %v", err)
	}
	reg.Restart()
	got, err := b.Pull(ctx, ref, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != src.ID {
		t.Errorf("pulled %s, want %s", got.ID, src.ID)
	}
	for _, d := range sb.LayerDirs(got) {
		if _, err := os.Stat(d); err != nil {
			t.Error(err)
		}
	}
}

// TestConcurrentPullsShareLayers: two pulls of one image at once fetch
// each layer once.
func TestConcurrentPullsShareLayers(t *testing.T) {
	t.Parallel()
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ctx := context.Background()
	a, sa := newClient(t, reg)
	putRandom(t, sa, "shared", 1<<20, 4)
	ref := reg.Addr + "/shared:v1"
	if _, err := a.Push(ctx, "shared", ref, nil, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := newClient(t, reg)
	var complete atomic.Int32
	progress := func(p image.Progress) {
		if p.Status == "Pull complete" {
			complete.Add(1)
		}
	}
	var wg sync.WaitGroup
	results := make([]*image.Image, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = b.Pull(ctx, ref, nil, progress)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if results[0].ID != results[1].ID || complete.Load() != 4 {
		t.Errorf("ids %s %s, %d layers fetched: want one image, 4 fetches", results[0].ID, results[1].ID, complete.Load())
	}
}

// TestPlainHTTPRefused: a registry that is neither on loopback nor named
// insecure never gets a plain HTTP request (checked at the transport, so
// no traffic leaves for that address).
func TestPlainHTTPRefused(t *testing.T) {
	var called atomic.Bool
	base := roundTripFunc(func(*http.Request) (*http.Response, error) { called.Store(true); return nil, http.ErrServerClosed })
	c := registry.New(nil)
	c.Transport = base
	rt := registry.GuardedTransport(c)
	req, _ := http.NewRequest(http.MethodGet, "http://10.1.2.3:5000/v2/", nil)
	if _, err := rt.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "plain HTTP refused") || called.Load() {
		t.Errorf("plain HTTP to 10.1.2.3: %v (sent: %v)", err, called.Load())
	}
	c.Insecure = []string{"10.1.2.3:5000"}
	rt = registry.GuardedTransport(c)
	if _, err := rt.RoundTrip(req); !called.Load() {
		t.Errorf("plain HTTP to a registry named insecure was refused: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestManifestListAndOCITypes: a multi-platform index resolves to this
// host's platform, and OCI media types survive a round trip.
func TestManifestListAndOCITypes(t *testing.T) {
	t.Parallel()
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ctx := context.Background()
	c, _ := newClient(t, reg)
	var images []v1.Image
	idx := v1.ImageIndex(empty.Index)
	for _, arch := range []string{"arm64", "amd64", "riscv64"} {
		img, err := random.Image(8<<10, 1)
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", arch
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		images = append(images, img)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	ref, _ := name.ParseReference(reg.Addr + "/multi/arch:v1")
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	got, err := c.Pull(ctx, ref.String(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := images[1] // amd64
	if goruntime.GOARCH == "arm64" {
		want = images[0]
	}
	wantDigest, _ := want.Digest()
	if got.Manifest.String() != wantDigest.String() || got.MediaType != string(types.OCIManifestSchema1) {
		t.Errorf("pulled %s (%s), want %s for %s", got.Manifest, got.MediaType, wantDigest, goruntime.GOARCH)
	}
	pushed, err := c.Push(ctx, ref.String(), reg.Addr+"/single/arch:v1", nil, nil)
	if err != nil || pushed != wantDigest {
		t.Errorf("re-push of the OCI image: %s %v, want %s", pushed, err, wantDigest)
	}
}
