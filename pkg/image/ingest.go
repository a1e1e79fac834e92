package image

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/berth-containers/berth/pkg/image/content"
	"github.com/berth-containers/berth/pkg/image/unpack"
)

// Progress is one event of a pull, load or push, per layer, in the words
// docker prints.
type Progress struct {
	ID      string // short layer digest
	Status  string // "Pulling fs layer", "Downloading", "Download complete", "Pull complete", "Already exists", "Pushed"...
	Current int64
	Total   int64
}

// PutOptions describe an image being stored.
type PutOptions struct {
	Names    []string // references to point at the image (normalized by Put)
	Source   string   // repository the blobs come from, for cross-repository mounts
	Progress func(Progress)
	Limits   unpack.Options
	// BuildCache marks the image as made by a build step (Image.BuildCache).
	BuildCache bool
}

// parallelLayers is how many layers one Put fetches and unpacks at once.
const parallelLayers = 3

// Put stores img: its manifest and config blobs, each layer's compressed
// blob and unpacked directory, then, in one transaction, the image and its
// names. Nothing is recorded until every part is verified and in place, so
// a failed or interrupted Put leaves no image; what it wrote is reused by
// the next try or removed at the next New. The data reaches the disk in
// the background; a crash of the machine before that removes the image at
// the next New (durability.go).
func (s *Store) Put(ctx context.Context, img v1.Image, opts PutOptions) (*Image, error) {
	names := make([]string, len(opts.Names))
	for i, n := range opts.Names {
		var err error
		if names[i], err = NormalizeName(n); err != nil {
			return nil, err
		}
	}
	// Blobs written here are unreferenced until the final transaction:
	// no removal may collect them meanwhile.
	s.mu.Lock()
	s.puts++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.puts--
		s.mu.Unlock()
	}()
	rec, err := s.putBlobs(img)
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("image %s: layers: %w", rec.ID, err)
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(Progress) {}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelLayers)
	for i, l := range layers {
		rec.Layers[i].Source = opts.Source
		g.Go(func() error {
			return s.ensureLayer(gctx, rec.Layers[i], l, opts.Limits, progress)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	rec.Stored = time.Now().UTC()
	rec.Pending = s.boot
	rec.BuildCache = opts.BuildCache
	err = s.db.Update(func(tx *bolt.Tx) error {
		images := tx.Bucket(imagesBucket)
		if images.Get([]byte(rec.ID)) == nil {
			if err := addLayerRefs(tx, rec.Layers); err != nil {
				return err
			}
			if err := putJSON(images, []byte(rec.ID), rec); err != nil {
				return err
			}
		}
		for _, n := range names {
			if err := tx.Bucket(namesBucket).Put([]byte(n), []byte(rec.ID)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record image %s: %w", rec.ID, err)
	}
	s.requestFlush()
	return s.Get(rec.ID.String())
}

// putBlobs stores the manifest and config and returns the image record
// with its layers' descriptors and chain IDs.
func (s *Store) putBlobs(img v1.Image) (*Image, error) {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	id := digest.FromBytes(rawConfig)
	if m.Config.Digest.String() != id.String() {
		return nil, fmt.Errorf("config %s: the manifest names %s: %w", id, m.Config.Digest, errdefs.ErrInvalidArgument)
	}
	if len(m.Layers) != len(cfg.RootFS.DiffIDs) {
		return nil, fmt.Errorf("image %s: %d layers but %d diff IDs in its config: %w", id, len(m.Layers), len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
	}
	rec := &Image{ID: id, Manifest: digest.FromBytes(rawManifest), MediaType: string(m.MediaType)}
	if rec.MediaType == "" {
		mt, _ := img.MediaType()
		rec.MediaType = string(mt)
	}
	var chain digest.Digest
	for i, desc := range m.Layers {
		diffID := digest.Digest(cfg.RootFS.DiffIDs[i].String())
		if err := diffID.Validate(); err != nil {
			return nil, fmt.Errorf("image %s: diff ID %d: %w", id, i, err)
		}
		chain = chainID(chain, diffID)
		rec.Layers = append(rec.Layers, Layer{
			Digest: digest.Digest(desc.Digest.String()), Size: desc.Size, MediaType: string(desc.MediaType),
			DiffID: diffID, ChainID: chain,
		})
	}
	if _, err := s.content.WriteBytes(rawConfig); err != nil {
		return nil, fmt.Errorf("store config: %w", err)
	}
	if _, err := s.content.WriteBytes(rawManifest); err != nil {
		return nil, fmt.Errorf("store manifest: %w", err)
	}
	return rec, nil
}

// chainID is the OCI chain ID of a layer on top of parent's chain.
func chainID(parent, diffID digest.Digest) digest.Digest {
	if parent == "" {
		return diffID
	}
	return digest.FromString(parent.String() + " " + diffID.String())
}

func addLayerRefs(tx *bolt.Tx, layers []Layer) error {
	lb := tx.Bucket(layersBucket)
	for _, l := range layers {
		var r layerRecord
		v := lb.Get([]byte(l.ChainID))
		if v == nil {
			return fmt.Errorf("layer %s: not unpacked", l.ChainID)
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		r.Refs++
		if err := putJSON(lb, []byte(l.ChainID), r); err != nil {
			return err
		}
	}
	return nil
}

// layerCall is one layer being unpacked; concurrent Puts of the same
// layer wait for it instead of fetching it again.
type layerCall struct {
	done chan struct{}
	err  error
}

// claim returns the call making the layer chainID: one in flight to wait
// for (busy), or a new one the caller makes and finishes.
func (s *Store) claim(chainID digest.Digest) (call *layerCall, busy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if call, busy = s.inflight[chainID]; !busy {
		call = &layerCall{done: make(chan struct{})}
		s.inflight[chainID] = call
	}
	return call, busy
}

// finish ends a claimed call with err, waking its waiters.
func (s *Store) finish(chainID digest.Digest, call *layerCall, err error) {
	call.err = err
	s.mu.Lock()
	delete(s.inflight, chainID)
	s.mu.Unlock()
	close(call.done)
}

// ensureLayer makes sure the layer is unpacked and its blob stored.
func (s *Store) ensureLayer(ctx context.Context, want Layer, l v1.Layer, lim unpack.Options, progress func(Progress)) error {
	short := want.Digest.Encoded()[:12]
	for {
		if s.haveLayer(want) {
			progress(Progress{ID: short, Status: "Already exists"})
			return nil
		}
		call, busy := s.claim(want.ChainID)
		if busy {
			select {
			case <-call.done:
				if call.err != nil {
					return call.err
				}
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		err := s.fetchLayer(ctx, want, l, lim, progress)
		s.finish(want.ChainID, call, err)
		return err
	}
}

// haveLayer reports whether the layer's directory and blob are in place.
func (s *Store) haveLayer(l Layer) bool {
	if !s.layerRecorded(l.ChainID) {
		return false
	}
	_, err := s.content.Info(l.Digest)
	return err == nil
}

func (s *Store) layerRecorded(chainID digest.Digest) bool {
	found := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(layersBucket).Get([]byte(chainID)) != nil
		return nil
	})
	return found
}

// fetchLayer reads the compressed layer once, writing it to the content
// store and unpacking it at the same time, then checks both digests and
// moves the directory into place.
func (s *Store) fetchLayer(ctx context.Context, want Layer, l v1.Layer, lim unpack.Options, progress func(Progress)) (err error) {
	short := want.Digest.Encoded()[:12]
	fail := func(err error) error { return fmt.Errorf("layer %s: %w", want.Digest, err) }
	progress(Progress{ID: short, Status: "Pulling fs layer", Total: want.Size})
	rc, err := l.Compressed()
	if err != nil {
		return fail(err)
	}
	defer rc.Close()
	if s.layerRecorded(want.ChainID) {
		// Unpacked (and maybe mounted by a container) but its blob is
		// missing: store the blob only.
		if err := s.content.Write(rc, want.Digest, want.Size); err != nil {
			return fail(err)
		}
		progress(Progress{ID: short, Status: "Pull complete"})
		return nil
	}
	tmp, blob, err := s.newUnpack()
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	defer blob.Abort()
	diffDir := filepath.Join(tmp, "diff")
	// Fetching, writing and hashing the blob run ahead of decompression.
	fetch := unpack.ReadAhead(&progressReader{r: io.TeeReader(rc, blob), ctx: ctx, every: 1 << 20, report: func(n int64) {
		progress(Progress{ID: short, Status: "Downloading", Current: n, Total: want.Size})
	}}, 1<<20, 4)
	defer fetch.Close()
	src := fetch
	st, err := unpack.Unpack(src, diffDir, lim)
	if err != nil {
		return fail(err)
	}
	// Unpack stops at the end of the tar stream; the blob is the whole body.
	if _, err := io.Copy(io.Discard, src); err != nil {
		return fail(err)
	}
	progress(Progress{ID: short, Status: "Download complete", Current: want.Size, Total: want.Size})
	if st.DiffID != want.DiffID {
		return fail(fmt.Errorf("content has diff ID %s, the config says %s: %w", st.DiffID, want.DiffID, errdefs.ErrInvalidArgument))
	}
	// Not synced here: the layer is recorded pending and flushed in the
	// background (durability.go).
	if err := blob.CommitUnsynced(want.Digest, want.Size); err != nil {
		return fail(err)
	}
	final := filepath.Dir(s.LayerDir(want.ChainID))
	if err := os.RemoveAll(final); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		lb := tx.Bucket(layersBucket)
		if lb.Get([]byte(want.ChainID)) != nil {
			return nil
		}
		return putJSON(lb, []byte(want.ChainID), layerRecord{ChainID: want.ChainID, DiffID: want.DiffID, Size: st.Size, Pending: s.boot})
	})
	if err != nil {
		return fail(err)
	}
	progress(Progress{ID: short, Status: "Pull complete"})
	return nil
}

// newUnpack makes a directory under tmp/ with an empty diff/ to unpack a
// layer into, and an ingest for its blob.
func (s *Store) newUnpack() (string, *content.Ingest, error) {
	tmp, err := os.MkdirTemp(s.tmpDir(), "unpack-")
	if err != nil {
		return "", nil, err
	}
	if err := os.Mkdir(filepath.Join(tmp, "diff"), 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", nil, err
	}
	blob, err := s.content.NewIngest()
	if err != nil {
		os.RemoveAll(tmp)
		return "", nil, err
	}
	return tmp, blob, nil
}

type progressReader struct {
	r      io.Reader
	ctx    context.Context
	n      int64
	next   int64
	every  int64
	report func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.n >= p.next {
		p.report(p.n)
		p.next = p.n + p.every
	}
	return n, err
}
