package registry

import (
	"io"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-containers/berth/pkg/image"
)

// pushImage is a stored image whose layers report their upload and carry
// their source repository, so that remote.Write mounts them across
// repositories instead of uploading them.
type pushImage struct {
	v1.Image
	stored   *image.Image
	progress func(image.Progress)
	target   name.Repository

	mu       sync.Mutex
	reported map[string]bool
}

func (p *pushImage) Layers() ([]v1.Layer, error) {
	layers, err := p.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(layers))
	for i, l := range layers {
		pl := &progressLayer{Layer: l, img: p, id: p.stored.Layers[i].Digest.Encoded()[:12]}
		out[i] = pl
		src := p.stored.Layers[i].Source
		if src == "" {
			continue
		}
		repo, err := name.NewRepository(src)
		if err != nil || repo.RegistryStr() != p.target.RegistryStr() || repo.String() == p.target.String() {
			continue
		}
		out[i] = &remote.MountableLayer{Layer: pl, Reference: repo.Tag("latest")}
	}
	return out, nil
}

func (p *pushImage) report(id, status string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reported == nil {
		p.reported = map[string]bool{}
	}
	if status == "Pushed" {
		p.reported[id] = true
	}
	p.progress(image.Progress{ID: id, Status: status})
}

// reportRest says "Layer already exists" for layers never read: the
// registry had them, or mounted them.
func (p *pushImage) reportRest() {
	for _, l := range p.stored.Layers {
		id := l.Digest.Encoded()[:12]
		p.mu.Lock()
		done := p.reported[id]
		p.mu.Unlock()
		if !done {
			p.progress(image.Progress{ID: id, Status: "Layer already exists"})
		}
	}
}

type progressLayer struct {
	v1.Layer
	img *pushImage
	id  string
}

func (l *progressLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	l.img.report(l.id, "Pushing")
	return &doneReader{ReadCloser: rc, done: func() { l.img.report(l.id, "Pushed") }}, nil
}

type doneReader struct {
	io.ReadCloser
	done func()
	once sync.Once
}

func (d *doneReader) Read(p []byte) (int, error) {
	n, err := d.ReadCloser.Read(p)
	if err == io.EOF {
		d.once.Do(d.done)
	}
	return n, err
}
