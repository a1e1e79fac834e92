package image

import (
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image returns a stored image as a go-containerregistry v1.Image, backed
// by the stored manifest, config and compressed blobs: pushing or saving
// it reproduces the digests it was pulled or loaded with.
func (s *Store) Image(img *Image) (v1.Image, error) {
	return partial.CompressedToImage(&storedImage{s: s, img: img})
}

// Config returns the parsed config of a stored image.
func (s *Store) Config(img *Image) (*v1.ConfigFile, error) {
	vi, err := s.Image(img)
	if err != nil {
		return nil, err
	}
	return vi.ConfigFile()
}

type storedImage struct {
	s   *Store
	img *Image
}

func (i *storedImage) RawConfigFile() ([]byte, error) { return i.s.content.ReadAll(i.img.ID) }
func (i *storedImage) RawManifest() ([]byte, error)   { return i.s.content.ReadAll(i.img.Manifest) }
func (i *storedImage) MediaType() (types.MediaType, error) {
	return types.MediaType(i.img.MediaType), nil
}

func (i *storedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range i.img.Layers {
		if l.Digest.String() == h.String() {
			return &storedLayer{s: i.s, l: l}, nil
		}
	}
	return nil, fmt.Errorf("image %s: no layer %s: %w", i.img.ID, h, errdefs.ErrNotFound)
}

type storedLayer struct {
	s *Store
	l Layer
}

func (l *storedLayer) Digest() (v1.Hash, error) { return v1.NewHash(l.l.Digest.String()) }
func (l *storedLayer) DiffID() (v1.Hash, error) { return v1.NewHash(l.l.DiffID.String()) }
func (l *storedLayer) Size() (int64, error)     { return l.l.Size, nil }
func (l *storedLayer) MediaType() (types.MediaType, error) {
	return types.MediaType(l.l.MediaType), nil
}
func (l *storedLayer) Compressed() (io.ReadCloser, error) { return l.s.content.Open(l.l.Digest) }

// Source is the repository the layer's blob was pulled from, if any.
func (l *storedLayer) Source() string { return l.l.Source }
