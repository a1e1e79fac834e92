package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-containers/berth/pkg/image/diff"
	"github.com/berth-containers/berth/pkg/image/unpack"
)

// Commit stores a new image: base's layers (none when base is nil) plus,
// when upper is not empty, one layer made of the directory upper (a
// writable layer in overlayfs' format, as a snapshot leaves it), with the
// config cfg. Commit fills in cfg's diff IDs; the caller keeps its
// history. The new layer is compressed with gzip into the content store
// and unpacked from the same stream, so that the layer pushed and the
// layer containers run on are one and the same.
func (s *Store) Commit(ctx context.Context, base *Image, cfg *v1.ConfigFile, upper string, opts PutOptions) (*Image, error) {
	release := s.hold()
	defer release()
	var img v1.Image = empty.Image
	var layers []Layer
	if base != nil {
		vi, err := s.Image(base)
		if err != nil {
			return nil, err
		}
		img, layers = vi, base.Layers
	}
	cfg = cfg.DeepCopy()
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = nil
	for _, l := range layers {
		h, err := v1.NewHash(l.DiffID.String())
		if err != nil {
			return nil, err
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, h)
	}
	if upper != "" {
		mt, err := img.MediaType()
		if err != nil {
			return nil, err
		}
		layerType := types.DockerLayer
		if mt == types.OCIManifestSchema1 {
			layerType = types.OCILayer
		}
		var parent digest.Digest
		if len(layers) > 0 {
			parent = layers[len(layers)-1].ChainID
		}
		l, err := s.commitLayer(ctx, parent, upper, layerType)
		if err != nil {
			return nil, err
		}
		vl, err := partial.CompressedToLayer(&storedLayer{s: s, l: l})
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, vl); err != nil {
			return nil, err
		}
		h, _ := v1.NewHash(l.DiffID.String())
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, h)
	}
	img, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	return s.Put(ctx, img, opts)
}

// hold keeps blob collection off until the returned func is called: the
// blobs written meanwhile are not referenced by an image yet.
func (s *Store) hold() func() {
	s.mu.Lock()
	s.puts++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.puts--
		s.mu.Unlock()
	}
}

// commitLayer writes upper as a gzip layer blob and unpacks that same tar
// stream as the layer on top of parent, recorded with no image using it
// yet (the Put that follows adds the image).
func (s *Store) commitLayer(ctx context.Context, parent digest.Digest, upper string, mediaType types.MediaType) (Layer, error) {
	fail := func(err error) (Layer, error) { return Layer{}, fmt.Errorf("commit layer from %s: %w", upper, err) }
	tmp, blob, err := s.newUnpack()
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	defer blob.Abort()
	diffDir := filepath.Join(tmp, "diff")
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(diff.Write(pw, upper)) }()
	defer pr.Close()
	// Level 1: a build's layers are written once per change and read
	// back rarely; fast compression keeps the build's pace.
	gz, err := gzip.NewWriterLevel(blob, gzip.BestSpeed)
	if err != nil {
		return fail(err)
	}
	tee := io.TeeReader(&ctxReader{ctx: ctx, r: pr}, gz)
	st, err := unpack.Unpack(tee, diffDir, unpack.Options{})
	if err != nil {
		return fail(err)
	}
	if _, err := io.Copy(io.Discard, tee); err != nil { // the tar's end blocks
		return fail(err)
	}
	if err := gz.Close(); err != nil {
		return fail(err)
	}
	l := Layer{Digest: blob.Digest(), Size: blob.Size(), MediaType: string(mediaType), DiffID: st.DiffID, ChainID: chainID(parent, st.DiffID)}
	if err := blob.CommitUnsynced(l.Digest, l.Size); err != nil {
		return fail(err)
	}
	// The same change on the same parent may be committed by another
	// build at the same time, or have been before: the first one wins.
	call, busy := s.claim(l.ChainID)
	if busy {
		<-call.done
		return l, call.err
	}
	err = s.placeLayer(tmp, l, st.Size)
	s.finish(l.ChainID, call, err)
	if err != nil {
		return fail(err)
	}
	return l, nil
}

// placeLayer moves an unpacked layer from tmp into place and records it,
// unless it is there already.
func (s *Store) placeLayer(tmp string, l Layer, size int64) error {
	if s.layerRecorded(l.ChainID) {
		return nil
	}
	final := filepath.Dir(s.LayerDir(l.ChainID))
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		lb := tx.Bucket(layersBucket)
		if lb.Get([]byte(l.ChainID)) != nil {
			return nil
		}
		return putJSON(lb, []byte(l.ChainID), layerRecord{ChainID: l.ChainID, DiffID: l.DiffID, Size: size, Pending: s.boot})
	})
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
