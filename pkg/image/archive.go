package image

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/berth-containers/berth/pkg/image/unpack"
)

// ImportOptions describe an imported image.
type ImportOptions struct {
	Names []string
	// Source names the tarball in the image's history; default its file name.
	Source   string
	Progress func(Progress)
}

// Import makes an image of one layer from a root filesystem tarball
// (plain, gzip or zstd), as `docker import` does.
func (s *Store) Import(ctx context.Context, tarPath string, opts ImportOptions) (*Image, error) {
	layer, err := tarball.LayerFromFile(tarPath)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", tarPath, err)
	}
	source := opts.Source
	if source == "" {
		source = filepath.Base(tarPath)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: time.Now().UTC()}, CreatedBy: "berth import " + source, Comment: "Imported from " + source},
	})
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", tarPath, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = "linux", goruntime.GOARCH, v1.Time{Time: time.Now().UTC()}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, err
	}
	return s.Put(ctx, img, PutOptions{Names: opts.Names, Progress: opts.Progress})
}

// Load stores the images of an archive: a `docker save` tarball, a
// tarball of an OCI image layout, or an OCI image layout directory. The
// names recorded in the archive are kept.
func (s *Store) Load(ctx context.Context, path string, progress func(Progress)) ([]*Image, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if fi.IsDir() {
		return s.loadLayout(ctx, path, progress)
	}
	if hasMember(path, "manifest.json") {
		return s.loadDockerArchive(ctx, path, progress)
	}
	if !hasMember(path, "index.json") {
		return nil, fmt.Errorf("load %s: neither a docker save archive (manifest.json) nor an OCI layout (index.json): %w", path, errdefs.ErrInvalidArgument)
	}
	dir, err := os.MkdirTemp(s.tmpDir(), "load-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The archive is untrusted: it is extracted like a layer.
	if _, err := unpack.Unpack(f, dir, unpack.Options{}); err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return s.loadLayout(ctx, dir, progress)
}

// hasMember reports whether the tar at path has a member named name.
func hasMember(path, name string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return false
		}
		if filepath.Clean(h.Name) == name {
			return true
		}
	}
}

func (s *Store) loadDockerArchive(ctx context.Context, path string, progress func(Progress)) ([]*Image, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(path) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	var out []*Image
	for i, desc := range m {
		var tag *name.Tag
		if len(desc.RepoTags) > 0 {
			t, err := name.NewTag(desc.RepoTags[0])
			if err != nil {
				return out, fmt.Errorf("load %s: image %d: %w", path, i, err)
			}
			tag = &t
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return out, fmt.Errorf("load %s: image %d: %w", path, i, err)
		}
		stored, err := s.Put(ctx, img, PutOptions{Names: desc.RepoTags, Progress: progress})
		if err != nil {
			return out, fmt.Errorf("load %s: image %d: %w", path, i, err)
		}
		out = append(out, stored)
	}
	return out, nil
}

// Annotations naming an image in an OCI layout's index.
const (
	annotationRefName       = "org.opencontainers.image.ref.name"
	annotationContainerdRef = "io.containerd.image.name"
)

func (s *Store) loadLayout(ctx context.Context, dir string, progress func(Progress)) ([]*Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	var out []*Image
	for _, desc := range im.Manifests {
		if !desc.MediaType.IsImage() {
			continue // nested indexes (multi-platform) are not loaded
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return out, fmt.Errorf("load %s: %s: %w", dir, desc.Digest, err)
		}
		var names []string
		if n := desc.Annotations[annotationContainerdRef]; n != "" {
			names = append(names, n)
		} else if n := desc.Annotations[annotationRefName]; n != "" {
			if _, err := NormalizeName(n); err == nil {
				names = append(names, n)
			}
		}
		stored, err := s.Put(ctx, img, PutOptions{Names: names, Progress: progress})
		if err != nil {
			return out, fmt.Errorf("load %s: %s: %w", dir, desc.Digest, err)
		}
		out = append(out, stored)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("load %s: no image for this platform in the layout: %w", dir, errdefs.ErrNotFound)
	}
	return out, nil
}

// Save writes images as a `docker save` archive to w, each under the
// name it was asked by (or all its names when asked by ID).
func (s *Store) Save(w io.Writer, refs []string) error {
	m := map[name.Reference]v1.Image{}
	for _, ref := range refs {
		img, vi, names, err := s.forSave(ref)
		if err != nil {
			return err
		}
		if len(names) == 0 {
			// A digest reference puts no RepoTags in manifest.json: the
			// image loads back unnamed, as it was.
			d, err := name.NewDigest("unnamed@" + img.Manifest.String())
			if err != nil {
				return err
			}
			m[d] = vi
			continue
		}
		for _, n := range names {
			r, err := name.ParseReference(n)
			if err != nil {
				return err
			}
			m[r] = vi
		}
	}
	return tarball.MultiRefWrite(m, w)
}

// SaveLayout writes images into an OCI image layout directory, naming
// each with the org.opencontainers.image.ref.name annotation.
func (s *Store) SaveLayout(dir string, refs []string) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	for _, ref := range refs {
		_, vi, names, err := s.forSave(ref)
		if err != nil {
			return err
		}
		var opts []layout.Option
		if len(names) == 1 {
			opts = append(opts, layout.WithAnnotations(map[string]string{annotationRefName: names[0], annotationContainerdRef: names[0]}))
		}
		if err := p.AppendImage(vi, opts...); err != nil {
			return err
		}
	}
	return nil
}

// forSave finds the image ref names and the names to save it under: the
// name it was asked by, or all its names when asked by ID.
func (s *Store) forSave(ref string) (*Image, v1.Image, []string, error) {
	img, err := s.Get(ref)
	if err != nil {
		return nil, nil, nil, err
	}
	vi, err := s.Image(img)
	if err != nil {
		return nil, nil, nil, err
	}
	names := img.Names
	if key, err := NormalizeName(ref); err == nil && slices.Contains(img.Names, key) {
		names = []string{key}
	}
	return img, vi, names, nil
}
