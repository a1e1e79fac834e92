package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	goruntime "runtime"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-containers/berth/pkg/image"
)

// Client talks to registries for one image store.
type Client struct {
	store *image.Store
	// Insecure lists registries (host or host:port) allowed over plain
	// HTTP, besides those on the loopback interface.
	Insecure []string
	// Transport is the base HTTP transport (a custom CA pool in tests);
	// nil means http.DefaultTransport.
	Transport http.RoundTripper
}

// New returns a client that stores pulled images in store.
func New(store *image.Store) *Client { return &Client{store: store} }

// Platform is the platform picked from manifest lists.
func Platform() v1.Platform { return v1.Platform{OS: "linux", Architecture: goruntime.GOARCH} }

func (c *Client) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	if c.insecure(r.Context().RegistryStr()) {
		r, err = name.ParseReference(ref, name.Insecure)
	}
	return r, err
}

func (c *Client) insecure(registry string) bool {
	return loopback(registry) || slices.Contains(c.Insecure, registry)
}

func loopback(registry string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// transport refuses plain HTTP to registries not allowed it:
// go-containerregistry would otherwise fall back to HTTP for private
// (RFC 1918) addresses too.
func (c *Client) transport() http.RoundTripper {
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	return schemeGuard{base: base, allowed: c.insecure}
}

type schemeGuard struct {
	base    http.RoundTripper
	allowed func(string) bool
}

func (g schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.allowed(req.URL.Host) {
		return nil, fmt.Errorf("registry %s: plain HTTP refused; name it as an insecure registry in the daemon's configuration to allow it", req.URL.Host)
	}
	return g.base.RoundTrip(req)
}

func (c *Client) options(ctx context.Context, auth authn.Authenticator) []remote.Option {
	if auth == nil {
		auth = authn.Anonymous
	}
	return []remote.Option{
		remote.WithContext(ctx), remote.WithAuth(auth), remote.WithTransport(c.transport()),
		remote.WithPlatform(Platform()), remote.WithUserAgent("berth"),
	}
}

// Pull fetches ref (a tag or a digest; a manifest list resolves to this
// host's platform) into the store, naming the image ref.
func (c *Client) Pull(ctx context.Context, ref string, auth authn.Authenticator, progress func(image.Progress)) (*image.Image, error) {
	r, err := c.parse(ref)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(r, c.options(ctx, auth)...)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, classify(err))
	}
	stored, err := c.store.Put(ctx, img, image.PutOptions{
		Names: []string{r.String()}, Source: r.Context().String(), Progress: progress,
	})
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, classify(err))
	}
	return stored, nil
}

// Push uploads the stored image src as ref. Layers pulled from another
// repository of the same registry are mounted, not uploaded again.
func (c *Client) Push(ctx context.Context, src, ref string, auth authn.Authenticator, progress func(image.Progress)) (v1.Hash, error) {
	r, err := c.parse(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	stored, err := c.store.Get(src)
	if err != nil {
		return v1.Hash{}, err
	}
	vi, err := c.store.Image(stored)
	if err != nil {
		return v1.Hash{}, err
	}
	if progress == nil {
		progress = func(image.Progress) {}
	}
	pi := &pushImage{Image: vi, stored: stored, progress: progress, target: r.Context()}
	if err := remote.Write(r, pi, c.options(ctx, auth)...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, classify(err))
	}
	pi.reportRest()
	return vi.Digest()
}

// classify maps registry errors to error categories.
func classify(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	switch {
	case te.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%w: %w", errdefs.ErrUnauthenticated, err)
	case te.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: %w", errdefs.ErrPermissionDenied, err)
	case te.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
	}
	for _, d := range te.Errors {
		if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
			return fmt.Errorf("%w: %w", errdefs.ErrNotFound, err)
		}
	}
	return err
}

// Login checks credentials against a registry (GET /v2/ with them).
func (c *Client) Login(ctx context.Context, server string, auth authn.Authenticator) error {
	server = strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	server = strings.TrimSuffix(server, "/")
	var opts []name.Option
	if c.insecure(server) {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(server, opts...)
	if err != nil {
		return fmt.Errorf("login %s: %w: %w", server, err, errdefs.ErrInvalidArgument)
	}
	tr, err := transport.NewWithContext(ctx, reg, auth, c.transport(), []string{reg.Scope(transport.PullScope)})
	if err != nil {
		return fmt.Errorf("login %s: %w", server, classify(err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, reg.Scheme()+"://"+reg.RegistryStr()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("login %s: %w", server, classify(err))
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusUnauthorized:
		return fmt.Errorf("login %s: wrong username or password: %w", server, errdefs.ErrUnauthenticated)
	}
	return fmt.Errorf("login %s: registry answered %s", server, resp.Status)
}
