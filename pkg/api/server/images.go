package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	buildtypes "github.com/moby/moby/api/types/build"
	"github.com/moby/moby/api/types/container"
	imagetypes "github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/jsonstream"

	"github.com/berth-containers/berth/pkg/image"
)

// stream writes Docker's progress stream: one JSON message per line,
// flushed at once. The response starts with the first message, so that an
// error before any progress still gets its own status code.
type stream struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	enc     *json.Encoder
	started bool
}

func newStream(w http.ResponseWriter) *stream { return &stream{w: w, enc: json.NewEncoder(w)} }

func (s *stream) send(m jsonstream.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.w.Header().Set("Content-Type", "application/json")
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	_ = s.enc.Encode(m)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

// finish reports err in the stream if it started, else returns it for a
// status code.
func (s *stream) finish(err error) error {
	if err == nil || !s.started {
		return err
	}
	s.send(jsonstream.Message{Error: &jsonstream.Error{Message: err.Error()}})
	return nil
}

func (s *stream) progress(p image.Progress) {
	m := jsonstream.Message{ID: p.ID, Status: p.Status}
	if p.Status == "Downloading" || p.Status == "Pulling fs layer" {
		m.Progress = &jsonstream.Progress{Current: p.Current, Total: p.Total}
	}
	s.send(m)
}

func familiar(names []string) (tags, digests []string) {
	tags, digests = []string{}, []string{}
	for _, n := range names {
		if strings.Contains(n, "@") {
			digests = append(digests, image.FamiliarName(n))
		} else {
			tags = append(tags, image.FamiliarName(n))
		}
	}
	return tags, digests
}

func (s *Server) listImages(_ context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	filters, err := parseFilters(r.URL.Query().Get("filters"))
	if err != nil {
		return err
	}
	store := s.b.Images()
	imgs, err := store.List()
	if err != nil {
		return err
	}
	all := boolParam(r.URL.Query().Get("all"))
	out := []imagetypes.Summary{}
	for _, img := range imgs {
		if img.BuildCache && len(img.Names) == 0 && !all {
			continue // a build step's image, as Docker hides intermediate images
		}
		if d, ok := filters["dangling"]; ok && (len(img.Names) == 0) != d["true"] {
			continue
		}
		names := img.Names
		if refs, ok := filters["reference"]; ok {
			// As Docker: only the names that match are listed.
			names = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return !matchesAny([]string{n}, refs) })
			if len(names) == 0 {
				continue
			}
		}
		tags, digests := familiar(names)
		sum := imagetypes.Summary{ID: img.ID.String(), RepoTags: tags, RepoDigests: digests,
			Size: store.Usage(img).Size, SharedSize: -1, Containers: -1, Labels: map[string]string{}}
		if cfg, err := store.Config(img); err == nil {
			sum.Created = cfg.Created.Unix()
			if cfg.Config.Labels != nil {
				sum.Labels = cfg.Config.Labels
			}
		}
		out = append(out, sum)
	}
	return writeJSON(w, http.StatusOK, out)
}

// parseFilters reads Docker's filters parameter: {"key": {"value": true}}
// or the older {"key": ["value"]}.
func parseFilters(raw string) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	if raw == "" {
		return out, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, errBadRequestf("filters: %v", err)
	}
	for k, v := range m {
		out[k] = map[string]bool{}
		var set map[string]bool
		if json.Unmarshal(v, &set) == nil {
			out[k] = set
			continue
		}
		var list []string
		if err := json.Unmarshal(v, &list); err != nil {
			return nil, errBadRequestf("filter %s: %v", k, err)
		}
		for _, x := range list {
			out[k][x] = true
		}
	}
	return out, nil
}

// matchesAny reports whether a familiar name matches one of the patterns
// (path.Match globs, as Docker's reference filter).
func matchesAny(names []string, patterns map[string]bool) bool {
	for _, n := range names {
		f := image.FamiliarName(n)
		repo := f
		if i := strings.LastIndex(f, ":"); i > strings.LastIndex(f, "/") {
			repo = f[:i]
		}
		for p := range patterns {
			if ok, _ := path.Match(p, f); ok {
				return true
			}
			if ok, _ := path.Match(p, repo); ok {
				return true
			}
		}
	}
	return false
}

// createImage pulls (fromImage) or imports (fromSrc=-) an image.
func (s *Server) createImage(ctx context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	q := r.URL.Query()
	if q.Get("fromSrc") != "" {
		return s.importImage(ctx, w, r)
	}
	from, tag := q.Get("fromImage"), q.Get("tag")
	if from == "" {
		return errBadRequestf("fromImage or fromSrc is required")
	}
	ref := from
	switch {
	case strings.HasPrefix(tag, "sha256:"):
		ref = from + "@" + tag
	case tag != "":
		ref = from + ":" + tag
	}
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return errBadRequestf("invalid reference format: %v", err)
	}
	auth, err := registryAuth(r)
	if err != nil {
		return err
	}
	st := newStream(w)
	pulled := false
	img, err := s.b.Registry().Pull(ctx, ref, auth, func(p image.Progress) {
		if !pulled {
			pulled = true
			st.send(jsonstream.Message{ID: parsed.Identifier(), Status: "Pulling from " + pullPath(parsed)})
		}
		st.progress(p)
	})
	if err != nil {
		return st.finish(err)
	}
	key, _ := image.NormalizeName(ref)
	st.send(jsonstream.Message{Status: "Digest: " + img.Manifest.String()})
	st.send(jsonstream.Message{Status: "Status: Downloaded newer image for " + image.FamiliarName(key)})
	s.imageEvent("pull", image.FamiliarName(key), image.FamiliarName(key))
	return nil
}

// pullPath is the repository path Docker names in "Pulling from".
func pullPath(r name.Reference) string { return r.Context().RepositoryStr() }

// repoOf is the repository of a reference, in the store's spelling.
func repoOf(r name.Reference) string {
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + r.Context().RepositoryStr()
}

// bodyToFile copies a request body (an archive) into the store's tmp dir.
func (s *Server) bodyToFile(r *http.Request, pattern string) (string, error) {
	f, err := os.CreateTemp(s.b.Root()+"/tmp", pattern)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, r.Body); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("read request body: %w", err)
	}
	return f.Name(), f.Close()
}

func (s *Server) importImage(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if q.Get("fromSrc") != "-" {
		return errBadRequestf("fromSrc: only \"-\" (the request body) is supported")
	}
	var names []string
	if repo := q.Get("repo"); repo != "" {
		if tag := q.Get("tag"); tag != "" {
			repo += ":" + tag
		}
		names = append(names, repo)
	}
	file, err := s.bodyToFile(r, "import-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(file)
	img, err := s.b.Images().Import(ctx, file, image.ImportOptions{Names: names, Source: "-"})
	if err != nil {
		return err
	}
	newStream(w).send(jsonstream.Message{Status: img.ID.String()})
	s.imageEvent("import", img.ID.String(), img.ID.String())
	return nil
}

func (s *Server) loadImages(ctx context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	file, err := s.bodyToFile(r, "load-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(file)
	imgs, err := s.b.Images().Load(ctx, file, nil)
	if err != nil {
		return err
	}
	st := newStream(w)
	for _, img := range imgs {
		s.imageEvent("load", img.ID.String(), img.ID.String())
		if len(img.Names) == 0 {
			st.send(jsonstream.Message{Stream: "Loaded image ID: " + img.ID.String() + "\n"})
		}
		for _, n := range img.Names {
			st.send(jsonstream.Message{Stream: "Loaded image: " + image.FamiliarName(n) + "\n"})
		}
	}
	return nil
}

func (s *Server) saveImages(_ context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	names := r.URL.Query()["names"]
	if n := vars["name"]; n != "" {
		names = []string{n}
	}
	if len(names) == 0 {
		return errBadRequestf("no image names given")
	}
	for _, n := range names {
		if _, err := s.b.Images().Get(n); err != nil {
			return err
		}
	}
	w.Header().Set("Content-Type", "application/x-tar")
	if err := s.b.Images().Save(w, names); err != nil {
		return err
	}
	for _, n := range names {
		s.imageEvent("save", n, n)
	}
	return nil
}

// imageConfig finds an image and reads its config.
func (s *Server) imageConfig(ref string) (*image.Image, *v1.ConfigFile, error) {
	img, err := s.b.Images().Get(ref)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := s.b.Images().Config(img)
	return img, cfg, err
}

func (s *Server) inspectImage(_ context.Context, w http.ResponseWriter, _ *http.Request, vars map[string]string) error {
	store := s.b.Images()
	img, cfg, err := s.imageConfig(vars["name"])
	if err != nil {
		return err
	}
	tags, digests := familiar(img.Names)
	resp := imagetypes.InspectResponse{
		ID: img.ID.String(), RepoTags: tags, RepoDigests: digests,
		Architecture: cfg.Architecture, Variant: cfg.Variant, Os: cfg.OS, Author: cfg.Author,
		Size: store.Usage(img).Size, RootFS: imagetypes.RootFS{Type: "layers"},
	}
	if !cfg.Created.IsZero() {
		resp.Created = cfg.Created.Format(time.RFC3339Nano)
	}
	for _, l := range img.Layers {
		resp.RootFS.Layers = append(resp.RootFS.Layers, l.DiffID.String())
	}
	// The image config has Docker's field names: it converts through JSON.
	var dc dockerspec.DockerOCIImageConfig
	if b, err := json.Marshal(cfg.Config); err == nil && json.Unmarshal(b, &dc) == nil {
		resp.Config = &dc
	}
	return writeJSON(w, http.StatusOK, resp)
}

func (s *Server) imageHistory(_ context.Context, w http.ResponseWriter, _ *http.Request, vars map[string]string) error {
	store := s.b.Images()
	img, cfg, err := s.imageConfig(vars["name"])
	if err != nil {
		return err
	}
	tags, _ := familiar(img.Names)
	out := []imagetypes.HistoryResponseItem{}
	layer := len(img.Layers) - 1
	for i := len(cfg.History) - 1; i >= 0; i-- {
		h := cfg.History[i]
		item := imagetypes.HistoryResponseItem{ID: "<missing>", Created: h.Created.Unix(), CreatedBy: h.CreatedBy, Comment: h.Comment, Tags: []string{}}
		if i == len(cfg.History)-1 {
			item.ID, item.Tags = img.ID.String(), tags
		}
		if !h.EmptyLayer && layer >= 0 {
			item.Size = store.LayerSize(img.Layers[layer].ChainID)
			layer--
		}
		out = append(out, item)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) pushImage(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	tag := r.URL.Query().Get("tag")
	if tag == "" {
		tag = "latest"
	}
	ref := vars["name"] + ":" + tag
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return errBadRequestf("invalid reference format: %v", err)
	}
	if _, err := s.b.Images().Get(ref); err != nil {
		return fmt.Errorf("an image does not exist locally with the tag %s: %w", vars["name"], err)
	}
	auth, err := registryAuth(r)
	if err != nil {
		return err
	}
	st := newStream(w)
	st.send(jsonstream.Message{Status: "The push refers to repository [" + image.FamiliarName(repoOf(parsed)) + "]"})
	d, err := s.b.Registry().Push(ctx, ref, ref, auth, st.progress)
	if err != nil {
		return st.finish(err)
	}
	img, _ := s.b.Images().Get(ref)
	size := 0
	if raw, err := s.b.Images().Content().ReadAll(img.Manifest); err == nil {
		size = len(raw)
	}
	st.send(jsonstream.Message{Status: fmt.Sprintf("%s: digest: %s size: %d", tag, d, size)})
	aux, _ := json.Marshal(map[string]any{"Tag": tag, "Digest": d.String(), "Size": size})
	raw := json.RawMessage(aux)
	st.send(jsonstream.Message{Aux: &raw})
	s.imageEvent("push", image.FamiliarName(repoOf(parsed))+":"+tag, image.FamiliarName(repoOf(parsed)))
	return nil
}

func (s *Server) tagImage(_ context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	q := r.URL.Query()
	repo, tag := q.Get("repo"), q.Get("tag")
	if repo == "" {
		return errBadRequestf("repo is required")
	}
	if tag != "" {
		repo += ":" + tag
	}
	if err := s.b.Images().Tag(vars["name"], repo); err != nil {
		return err
	}
	if img, err := s.b.Images().Get(repo); err == nil {
		key, _ := image.NormalizeName(repo)
		s.imageEvent("tag", img.ID.String(), image.FamiliarName(key))
	}
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (s *Server) removeImage(_ context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	res, err := s.b.Images().Remove(vars["name"], image.RemoveOptions{Force: force, InUse: s.inUse})
	if err != nil {
		return err
	}
	out := []imagetypes.DeleteResponse{}
	for _, n := range res.Untagged {
		out = append(out, imagetypes.DeleteResponse{Untagged: image.FamiliarName(n)})
		s.imageEvent("untag", image.FamiliarName(n), image.FamiliarName(n))
	}
	for _, d := range res.Deleted {
		out = append(out, imagetypes.DeleteResponse{Deleted: d.String()})
		s.imageEvent("delete", d.String(), d.String())
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) pruneImages(_ context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	filters, err := parseFilters(r.URL.Query().Get("filters"))
	if err != nil {
		return err
	}
	all := filters["dangling"]["false"]
	store := s.b.Images()
	before := store.LayersSize()
	deleted, err := store.Prune(all, s.inUse)
	if err != nil {
		return err
	}
	report := imagetypes.PruneReport{ImagesDeleted: []imagetypes.DeleteResponse{}}
	for _, d := range deleted {
		report.ImagesDeleted = append(report.ImagesDeleted, imagetypes.DeleteResponse{Deleted: d.String()})
		s.imageEvent("delete", d.String(), d.String())
	}
	if after := store.LayersSize(); after < before {
		report.SpaceReclaimed = uint64(before - after)
	}
	return writeJSON(w, http.StatusOK, report)
}

// diskUsage serves /system/df: images only until containers exist. It
// answers in both shapes: the legacy one (LayersSize, Images, ...) that
// API 1.47 clients read, and ImageUsage of newer versions.
func (s *Server) diskUsage(_ context.Context, w http.ResponseWriter, _ *http.Request, _ map[string]string) error {
	store := s.b.Images()
	imgs, err := store.List()
	if err != nil {
		return err
	}
	items := []imagetypes.Summary{}
	cache := []buildtypes.CacheRecord{}
	var reclaimable, active, cacheSize int64
	for _, img := range imgs {
		tags, digests := familiar(img.Names)
		u := store.Usage(img)
		if img.BuildCache && len(img.Names) == 0 && !s.inUse(img.ID) {
			// A build step's image: the build cache, as Docker reports it.
			cache = append(cache, buildtypes.CacheRecord{ID: img.ID.Encoded()[:12], Type: "regular",
				Size: u.Size - u.Shared, CreatedAt: img.Stored})
			cacheSize += u.Size - u.Shared
			continue
		}
		sum := imagetypes.Summary{ID: img.ID.String(), RepoTags: tags, RepoDigests: digests,
			Size: u.Size, SharedSize: u.Shared, Containers: 0, Labels: map[string]string{}}
		if cfg, err := store.Config(img); err == nil {
			sum.Created = cfg.Created.Unix()
		}
		if s.inUse(img.ID) {
			sum.Containers = 1
			active++
		} else {
			reclaimable += u.Size - u.Shared
		}
		items = append(items, sum)
	}
	ctrs, err := s.b.Containers()
	if err != nil {
		return err
	}
	ctrItems := []container.Summary{}
	for _, ctr := range ctrs {
		sum := containerSummary(ctr, s.b.ContainerState(ctr))
		sum.SizeRw = s.b.ContainerSizeRw(ctr)
		ctrItems = append(ctrItems, sum)
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"LayersSize": store.LayersSize(), "Images": items,
		"Containers": ctrItems, "Volumes": []any{}, "BuildCache": cache,
		"ImageUsage":      imagetypes.DiskUsage{ActiveCount: active, TotalCount: int64(len(items)), Items: items, Reclaimable: reclaimable},
		"BuildCacheUsage": buildtypes.DiskUsage{TotalCount: int64(len(cache)), Items: cache, Reclaimable: cacheSize, TotalSize: cacheSize},
	})
}
