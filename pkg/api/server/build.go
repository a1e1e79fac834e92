package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	buildtypes "github.com/moby/moby/api/types/build"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/registry"

	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/build"
)

// BuildBackend builds images.
type BuildBackend interface {
	Build(ctx context.Context, ctxTar io.Reader, opts build.Options, pull func(context.Context, string) (*image.Image, error), out io.Writer) (*image.Image, error)
}

// build serves POST /build for the classic builder: the body is the
// context as a tar stream, the answer Docker's JSON stream of build
// output, then the image ID as aux.
func (s *Server) build(ctx context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	q := r.URL.Query()
	if q.Get("version") == string(buildtypes.BuilderBuildKit) {
		return errBadRequestf("BuildKit is not supported by berthd: build with the classic builder (DOCKER_BUILDKIT=0)")
	}
	if q.Get("remote") != "" {
		return errBadRequestf("remote build contexts are not supported: send the context as a tar stream")
	}
	if p := q.Get("platform"); p != "" && p != "linux/"+goruntime.GOARCH && p != "linux" {
		return errBadRequestf("platform %s: berthd builds for its host's platform only (linux/%s)", p, goruntime.GOARCH)
	}
	opts := build.Options{Dockerfile: q.Get("dockerfile"), Tags: q["t"], Target: q.Get("target"), NoCache: boolParam(q.Get("nocache"))}
	switch n := q.Get("networkmode"); n {
	case "", "default", "bridge":
	case "none", "host":
		opts.Network = n
	default:
		return errBadRequestf("network mode %q is not supported for builds (default, none or host)", n)
	}
	limits := []struct {
		param string
		dst   *int64
	}{{"memory", &opts.Limits.Memory}, {"memswap", &opts.Limits.MemorySwap}, {"cpushares", &opts.Limits.CPUShares},
		{"cpuquota", &opts.Limits.CPUQuota}, {"cpuperiod", &opts.Limits.CPUPeriod}, {"shmsize", &opts.Limits.ShmSize}}
	for _, l := range limits {
		if v := q.Get(l.param); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return errBadRequestf("%s=%q: want a number", l.param, v)
			}
			*l.dst = n
		}
	}
	opts.Limits.CpusetCpus, opts.Limits.CpusetMems = q.Get("cpusetcpus"), q.Get("cpusetmems")
	if v := q.Get("buildargs"); v != "" {
		if err := json.Unmarshal([]byte(v), &opts.BuildArgs); err != nil {
			return errBadRequestf("buildargs: %v", err)
		}
	}
	if v := q.Get("labels"); v != "" {
		if err := json.Unmarshal([]byte(v), &opts.Labels); err != nil {
			return errBadRequestf("labels: %v", err)
		}
	}
	auths, err := registryConfig(r)
	if err != nil {
		return err
	}
	pull := func(ctx context.Context, ref string) (*image.Image, error) {
		return s.b.Registry().Pull(ctx, ref, authFor(auths, ref), nil)
	}
	st := newStream(w)
	quiet := boolParam(q.Get("q"))
	out := &streamWriter{st: st}
	if quiet {
		out = &streamWriter{buf: &bytes.Buffer{}}
	}
	img, err := s.b.Build(ctx, r.Body, opts, pull, out)
	if err != nil {
		if !st.started {
			return err
		}
		var re *build.RunError
		code := 0
		if errors.As(err, &re) {
			code = re.Code
		}
		if quiet { // what the failing step printed helps
			st.send(jsonstream.Message{Stream: out.buf.String()})
		}
		st.send(jsonstream.Message{Error: &jsonstream.Error{Code: code, Message: message(err)}})
		return nil
	}
	aux, _ := json.Marshal(buildtypes.Result{ID: img.ID.String()})
	raw := json.RawMessage(aux)
	st.send(jsonstream.Message{Aux: &raw})
	if quiet {
		st.send(jsonstream.Message{Stream: img.ID.String() + "\n"})
	}
	for _, n := range img.Names {
		s.imageEvent("tag", img.ID.String(), image.FamiliarName(n))
	}
	return nil
}

// streamWriter turns the builder's output into stream messages, or keeps
// it in buf when the client asked for quiet.
type streamWriter struct {
	mu  sync.Mutex
	st  *stream
	buf *bytes.Buffer
}

func (w *streamWriter) Write(p []byte) (int, error) {
	if w.buf != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.buf.Write(p)
	}
	w.st.send(jsonstream.Message{Stream: string(p)})
	return len(p), nil
}

// registryConfig decodes X-Registry-Config: the client's credentials for
// every registry it knows, which a build may pull base images from.
func registryConfig(r *http.Request) (map[string]registry.AuthConfig, error) {
	h := r.Header.Get("X-Registry-Config")
	if h == "" {
		return nil, nil
	}
	data, err := base64.URLEncoding.DecodeString(h)
	if err != nil {
		if data, err = base64.StdEncoding.DecodeString(h); err != nil {
			return nil, errBadRequestf("X-Registry-Config: %v", err)
		}
	}
	var auths map[string]registry.AuthConfig
	if err := json.Unmarshal(data, &auths); err != nil {
		return nil, errBadRequestf("X-Registry-Config: %v", err)
	}
	return auths, nil
}

// authFor picks the credentials for ref's registry; keys may be bare
// hosts or URLs ("https://index.docker.io/v1/").
func authFor(auths map[string]registry.AuthConfig, ref string) authn.Authenticator {
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return authn.Anonymous
	}
	want := parsed.Context().RegistryStr()
	for k, ac := range auths {
		host := k
		if u, err := url.Parse(k); err == nil && u.Host != "" {
			host = u.Host
		}
		if strings.EqualFold(host, want) || (want == name.DefaultRegistry && host == "docker.io") {
			return authenticator(ac)
		}
	}
	return authn.Anonymous
}

// pruneBuildCache serves POST /build/prune: the build cache's keys and
// the unnamed images only it kept.
func (s *Server) pruneBuildCache(_ context.Context, w http.ResponseWriter, _ *http.Request, _ map[string]string) error {
	store := s.b.Images()
	before := store.LayersSize()
	deleted, err := store.PruneBuildCache(s.inUse)
	if err != nil {
		return err
	}
	report := buildtypes.CachePruneReport{CachesDeleted: []string{}}
	for _, d := range deleted {
		report.CachesDeleted = append(report.CachesDeleted, d.String())
	}
	if after := store.LayersSize(); after < before {
		report.SpaceReclaimed = uint64(before - after)
	}
	return writeJSON(w, http.StatusOK, report)
}
