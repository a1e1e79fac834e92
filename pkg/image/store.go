package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-containers/berth/pkg/image/content"
)

// Buckets of the metadata database that the image store owns.
var (
	imagesBucket = []byte("images")     // image ID -> Image (JSON)
	namesBucket  = []byte("names")      // normalized name -> image ID
	layersBucket = []byte("layers")     // chain ID -> layerRecord (JSON)
	cacheBucket  = []byte("buildcache") // build step's cache key -> image ID
)

// Image is a stored image. Its ID is the digest of its config, as Docker's.
type Image struct {
	ID        digest.Digest `json:"id"`
	Manifest  digest.Digest `json:"manifest"`
	MediaType string        `json:"mediaType"` // of the manifest
	Layers    []Layer       `json:"layers"`
	Stored    time.Time     `json:"stored"`
	// Pending is the boot ID under which the image was stored, until its
	// data is known to be on disk (see durability.go).
	Pending string `json:"pending,omitempty"`
	// BuildCache marks an image a build step made: without a name it is
	// part of the build cache, listed with `images -a` only, and removed
	// by a builder prune rather than an image prune.
	BuildCache bool `json:"buildCache,omitempty"`
	// Names are the image's references (docker.io/library/busybox:latest),
	// filled in from the names bucket when read.
	Names []string `json:"-"`
}

// Layer is one layer of an image.
type Layer struct {
	Digest    digest.Digest `json:"digest"` // the compressed blob, as in the manifest
	Size      int64         `json:"size"`   // of the compressed blob
	MediaType string        `json:"mediaType"`
	DiffID    digest.Digest `json:"diffID"`
	ChainID   digest.Digest `json:"chainID"`
	// Source is the repository the blob came from, for cross-repository
	// mounts on push.
	Source string `json:"source,omitempty"`
}

// layerRecord is an unpacked layer, shared by the images that use it.
type layerRecord struct {
	ChainID digest.Digest `json:"chainID"`
	DiffID  digest.Digest `json:"diffID"`
	Size    int64         `json:"size"`              // bytes of its tar stream
	Refs    int           `json:"refs"`              // images using it
	Pending string        `json:"pending,omitempty"` // see Image.Pending
}

// Store holds images: blobs in a content store, layers unpacked once each
// under layers/<chain ID>/, and metadata in bbolt.
type Store struct {
	root    string
	content *content.Store
	db      *bolt.DB

	mu       sync.Mutex
	inflight map[digest.Digest]*layerCall // layers being unpacked
	puts     int                          // Puts writing blobs they have not recorded yet

	boot        string        // this boot's ID, for pending records
	flushMu     sync.Mutex    // one Flush at a time
	flushReq    chan struct{} // to the flusher goroutine
	manualFlush bool
	closing     chan struct{}
	closeOnce   sync.Once
	flusherDone chan struct{}
}

// New opens the image store under root, keeping its metadata in db (the
// daemon's metadata.db). It removes what an interrupted pull, load or
// removal left: partial layers in tmp/, layer directories no image uses,
// and images a crash of the machine may have lost (see durability.go).
func New(root string, db *bolt.DB, opts ...Option) (*Store, error) {
	cs, err := content.New(root)
	if err != nil {
		return nil, err
	}
	s := &Store{root: root, content: cs, db: db, inflight: map[digest.Digest]*layerCall{},
		boot: readBootID(), flushReq: make(chan struct{}, 1), closing: make(chan struct{}), flusherDone: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if err := os.MkdirAll(s.layersDir(), 0o700); err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{imagesBucket, namesBucket, layersBucket, cacheBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := s.dropLost(); err != nil {
		return nil, fmt.Errorf("image store: clean up after a crash: %w", err)
	}
	if err := s.collect(); err != nil {
		return nil, fmt.Errorf("image store: clean up: %w", err)
	}
	go s.flusher()
	s.requestFlush() // records a killed process left pending in this boot
	return s, nil
}

// OpenDB opens (making it if needed) the metadata database under root.
func OpenDB(root string) (*bolt.DB, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(root, "metadata.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", filepath.Join(root, "metadata.db"), err)
	}
	return db, nil
}

// DB is the metadata database the store keeps its buckets in.
func (s *Store) DB() *bolt.DB { return s.db }

// Content is the store's blob store.
func (s *Store) Content() *content.Store { return s.content }

func (s *Store) layersDir() string { return filepath.Join(s.root, "layers") }
func (s *Store) tmpDir() string    { return filepath.Join(s.root, "tmp") }

// LayerDir is the unpacked directory of a layer, by chain ID.
func (s *Store) LayerDir(chainID digest.Digest) string {
	return filepath.Join(s.layersDir(), chainID.Encoded(), "diff")
}

// LayerDirs are an image's layer directories, lowest first.
func (s *Store) LayerDirs(img *Image) []string {
	dirs := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		dirs[i] = s.LayerDir(l.ChainID)
	}
	return dirs
}

// collect removes leftovers of interrupted work: unpack dirs in tmp/,
// layer dirs without a record or with no image using them, and blobs no
// image references.
func (s *Store) collect() error {
	stale, _ := filepath.Glob(filepath.Join(s.tmpDir(), "unpack-*"))
	for _, p := range stale {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	keepLayers := map[string]bool{}
	err := s.db.Update(func(tx *bolt.Tx) error {
		lb := tx.Bucket(layersBucket)
		var unused [][]byte
		err := lb.ForEach(func(k, v []byte) error {
			var r layerRecord
			if err := json.Unmarshal(v, &r); err != nil || r.Refs <= 0 {
				unused = append(unused, k)
				return nil
			}
			keepLayers[r.ChainID.Encoded()] = true
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range unused {
			if err := lb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	dirs, err := os.ReadDir(s.layersDir())
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if !keepLayers[d.Name()] {
			if err := os.RemoveAll(filepath.Join(s.layersDir(), d.Name())); err != nil {
				return err
			}
		}
	}
	return s.collectBlobs()
}

// NormalizeName turns a user's image name into the store's key:
// "busybox" -> "docker.io/library/busybox:latest". Digest references
// (name@sha256:...) keep their digest.
func NormalizeName(s string) (string, error) {
	r, err := name.ParseReference(s)
	if err != nil {
		return "", fmt.Errorf("image name %q: %w: %w", s, err, errdefs.ErrInvalidArgument)
	}
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = dockerHub
	}
	base := reg + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		return base + "@" + d.DigestStr(), nil
	}
	return base + ":" + r.Identifier(), nil
}

// dockerHub is Docker Hub's name in stored keys, as Docker writes it.
const dockerHub = "docker.io"

// FamiliarName is the short form of a stored name, as docker prints it:
// "docker.io/library/busybox:latest" -> "busybox:latest".
func FamiliarName(s string) string {
	short, ok := strings.CutPrefix(s, dockerHub+"/")
	if !ok {
		return s
	}
	if rest, ok := strings.CutPrefix(short, "library/"); ok && !strings.Contains(strings.SplitN(rest, ":", 2)[0], "/") {
		return rest
	}
	return short
}

// Get finds an image by name, name@digest, full ID or unique ID prefix.
func (s *Store) Get(ref string) (*Image, error) {
	var img *Image
	err := s.db.View(func(tx *bolt.Tx) error {
		id, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		img, err = readImage(tx, id)
		return err
	})
	return img, err
}

func resolve(tx *bolt.Tx, ref string) (digest.Digest, error) {
	images := tx.Bucket(imagesBucket)
	if id := digest.Digest(ref); id.Validate() == nil && images.Get([]byte(id)) != nil {
		return id, nil
	}
	if name, err := NormalizeName(ref); err == nil {
		if v := tx.Bucket(namesBucket).Get([]byte(name)); v != nil {
			return digest.Digest(v), nil
		}
	}
	// A unique prefix of the ID's hex, as docker accepts.
	prefix := strings.TrimPrefix(ref, "sha256:")
	if len(prefix) >= 4 && isHex(prefix) {
		var found []digest.Digest
		c := images.Cursor()
		start := []byte("sha256:" + prefix)
		for k, _ := c.Seek(start); k != nil && strings.HasPrefix(string(k), string(start)); k, _ = c.Next() {
			found = append(found, digest.Digest(k))
		}
		if len(found) == 1 {
			return found[0], nil
		}
		if len(found) > 1 {
			return "", fmt.Errorf("image %s: ambiguous ID prefix: %w", ref, errdefs.ErrInvalidArgument)
		}
	}
	return "", errdefs.ErrNotFound.WithMessage("No such image: " + ref)
}

func isHex(s string) bool {
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

func readImage(tx *bolt.Tx, id digest.Digest) (*Image, error) {
	v := tx.Bucket(imagesBucket).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("image %s: %w", id, errdefs.ErrNotFound)
	}
	var img Image
	if err := json.Unmarshal(v, &img); err != nil {
		return nil, fmt.Errorf("image %s: %w", id, err)
	}
	img.Names = namesOf(tx, id)
	return &img, nil
}

func namesOf(tx *bolt.Tx, id digest.Digest) []string {
	var names []string
	_ = tx.Bucket(namesBucket).ForEach(func(k, v []byte) error {
		if digest.Digest(v) == id {
			names = append(names, string(k))
		}
		return nil
	})
	sort.Strings(names)
	return names
}

// List returns every image, newest first.
func (s *Store) List() ([]*Image, error) {
	var out []*Image
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(imagesBucket).ForEach(func(k, _ []byte) error {
			img, err := readImage(tx, digest.Digest(k))
			if err != nil {
				return err
			}
			out = append(out, img)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Stored.After(out[j].Stored) })
	return out, err
}

// LayerSize is the unpacked size of a layer, by chain ID.
func (s *Store) LayerSize(chainID digest.Digest) int64 {
	var r layerRecord
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(layersBucket).Get([]byte(chainID)); v != nil {
			return json.Unmarshal(v, &r)
		}
		return nil
	})
	return r.Size
}

// Usage is an image's disk use: Size is the unpacked size of its layers,
// Shared the part in layers other images use too.
type Usage struct {
	Size, Shared int64
}

// Usage computes the disk use of img.
func (s *Store) Usage(img *Image) Usage {
	var u Usage
	_ = s.db.View(func(tx *bolt.Tx) error {
		lb := tx.Bucket(layersBucket)
		for _, l := range img.Layers {
			var r layerRecord
			if v := lb.Get([]byte(l.ChainID)); v == nil || json.Unmarshal(v, &r) != nil {
				continue
			}
			u.Size += r.Size
			if r.Refs > 1 {
				u.Shared += r.Size
			}
		}
		return nil
	})
	return u
}

// LayersSize is the unpacked size of every stored layer.
func (s *Store) LayersSize() int64 {
	var total int64
	_ = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(layersBucket).ForEach(func(_, v []byte) error {
			var r layerRecord
			if json.Unmarshal(v, &r) == nil {
				total += r.Size
			}
			return nil
		})
	})
	return total
}

// Tag gives the image ref another name.
func (s *Store) Tag(ref, name string) error {
	key, err := NormalizeName(name)
	if err != nil {
		return err
	}
	if strings.Contains(key, "@") {
		return fmt.Errorf("tag %s: a tag cannot be a digest reference: %w", name, errdefs.ErrInvalidArgument)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		id, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		return tx.Bucket(namesBucket).Put([]byte(key), []byte(id))
	})
}

// RemoveOptions say how Remove treats an image that is still needed.
type RemoveOptions struct {
	Force bool
	// InUse reports whether a container uses the image.
	InUse func(id digest.Digest) bool
}

// Removed is what Remove did, as Docker reports it.
type Removed struct {
	Untagged []string
	Deleted  []digest.Digest
}

// Remove untags ref and deletes the image once it has no name left, as
// `docker rmi` does. Removing by ID deletes every name (refused unless
// forced when there are several). Removing an image a container uses is
// refused; forced, it only untags it.
func (s *Store) Remove(ref string, opts RemoveOptions) (Removed, error) {
	var res Removed
	var freeLayers []digest.Digest
	err := s.db.Update(func(tx *bolt.Tx) error {
		id, err := resolve(tx, ref)
		if err != nil {
			return err
		}
		names := namesOf(tx, id)
		byName := false
		if key, err := NormalizeName(ref); err == nil && tx.Bucket(namesBucket).Get([]byte(key)) != nil {
			byName = true
			names = []string{key}
		}
		remaining := len(namesOf(tx, id)) - len(names)
		if !byName && len(names) > 1 && !opts.Force {
			return fmt.Errorf("image %s is referenced by several names (%s): remove them by name or force: %w",
				ref, strings.Join(names, ", "), errdefs.ErrConflict)
		}
		inUse := remaining == 0 && opts.InUse != nil && opts.InUse(id)
		if inUse && !opts.Force {
			return fmt.Errorf("image %s is used by a container: %w", ref, errdefs.ErrConflict)
		}
		for _, n := range names {
			if err := tx.Bucket(namesBucket).Delete([]byte(n)); err != nil {
				return err
			}
			res.Untagged = append(res.Untagged, n)
		}
		if remaining > 0 || inUse {
			// A forced removal of an image a container uses only untags
			// it, as Docker does: its layers stay under the container.
			return nil
		}
		img, err := readImage(tx, id)
		if err != nil {
			return err
		}
		if freeLayers, err = deleteImage(tx, img); err != nil {
			return err
		}
		res.Deleted = append(res.Deleted, id)
		return nil
	})
	if err != nil {
		return Removed{}, err
	}
	return res, s.release(freeLayers)
}

// purgeImage drops img's names, then the image as deleteImage does.
func purgeImage(tx *bolt.Tx, img *Image) ([]digest.Digest, error) {
	for _, n := range img.Names {
		if err := tx.Bucket(namesBucket).Delete([]byte(n)); err != nil {
			return nil, err
		}
	}
	return deleteImage(tx, img)
}

// deleteImage drops img's record and its layer references, returning the
// layers no image uses any more.
func deleteImage(tx *bolt.Tx, img *Image) ([]digest.Digest, error) {
	if err := tx.Bucket(imagesBucket).Delete([]byte(img.ID)); err != nil {
		return nil, err
	}
	var free []digest.Digest
	lb := tx.Bucket(layersBucket)
	for _, l := range img.Layers {
		var r layerRecord
		v := lb.Get([]byte(l.ChainID))
		if v == nil {
			continue
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, err
		}
		if r.Refs--; r.Refs > 0 {
			if err := putJSON(lb, []byte(l.ChainID), r); err != nil {
				return nil, err
			}
			continue
		}
		if err := lb.Delete([]byte(l.ChainID)); err != nil {
			return nil, err
		}
		free = append(free, l.ChainID)
	}
	return free, nil
}

// release deletes unused layer directories and unreferenced blobs after
// the metadata that used them is gone.
func (s *Store) release(layers []digest.Digest) error {
	var errs []error
	for _, c := range layers {
		errs = append(errs, os.RemoveAll(filepath.Dir(s.LayerDir(c))))
	}
	errs = append(errs, s.collectBlobs())
	return errors.Join(errs...)
}

// collectBlobs deletes blobs that no image references.
func (s *Store) collectBlobs() error {
	s.mu.Lock()
	busy := s.puts > 0
	s.mu.Unlock()
	if busy {
		return nil // a Put is writing blobs it has not recorded yet
	}
	keep := map[digest.Digest]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(imagesBucket).ForEach(func(_, v []byte) error {
			var img Image
			if err := json.Unmarshal(v, &img); err != nil {
				return err
			}
			keep[img.ID], keep[img.Manifest] = true, true
			for _, l := range img.Layers {
				keep[l.Digest] = true
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	blobs, err := s.content.List()
	if err != nil {
		return err
	}
	for _, b := range blobs {
		if !keep[b] {
			if err := s.content.Delete(b); err != nil {
				return err
			}
		}
	}
	return nil
}

// Prune deletes dangling images (no name, and not build cache), or with
// all every image no container uses, and returns what it deleted.
func (s *Store) Prune(all bool, inUse func(digest.Digest) bool) ([]digest.Digest, error) {
	return s.deleteWhere(nil, func(img *Image) bool {
		dangling := len(img.Names) == 0 && !img.BuildCache
		return (all || dangling) && (inUse == nil || !inUse(img.ID))
	})
}

// deleteWhere deletes, in one transaction after first (when not nil), the
// images victim picks, then their unused layers and blobs.
func (s *Store) deleteWhere(first func(*bolt.Tx) error, victim func(*Image) bool) ([]digest.Digest, error) {
	var deleted, free []digest.Digest
	err := s.db.Update(func(tx *bolt.Tx) error {
		if first != nil {
			if err := first(tx); err != nil {
				return err
			}
		}
		var victims []*Image
		err := tx.Bucket(imagesBucket).ForEach(func(k, _ []byte) error {
			img, err := readImage(tx, digest.Digest(k))
			if err != nil {
				return err
			}
			if victim(img) {
				victims = append(victims, img)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, img := range victims {
			f, err := purgeImage(tx, img)
			if err != nil {
				return err
			}
			free = append(free, f...)
			deleted = append(deleted, img.ID)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return deleted, s.release(free)
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}
