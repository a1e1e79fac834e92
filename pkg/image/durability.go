package image

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"

	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Durability of pulled data.
//
// A pull writes a layer's blob and its unpacked directory through the page
// cache and records the image at once, marked pending with the boot ID
// of the running kernel; a background flush (syncfs of the store's
// filesystem) then clears the marks. Waiting for the disk on every pull
// would cost about a quarter of a second per 200 MB, and buys nothing
// against a killed process, whose writes the page cache keeps anyway.
// Only a crash of the machine can lose them, and the next New recognises
// that case: a mark carrying another boot ID means the data may never have
// reached the disk, so those images and layers are removed, as if the
// pull had not happened. Records left pending within the same boot are
// flushed again. The bbolt transaction that records an image is itself
// durable when it returns.

// bootIDPath holds the kernel's boot ID, new at every boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

func readBootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// Option configures a Store.
type Option func(*Store)

// WithBootID overrides the boot ID, so tests can play a reboot.
func WithBootID(id string) Option { return func(s *Store) { s.boot = id } }

// WithManualFlush leaves pending records pending until Flush is called,
// for tests that play a crash before the flush.
func WithManualFlush() Option { return func(s *Store) { s.manualFlush = true } }

// requestFlush asks the flusher to make pending records durable.
func (s *Store) requestFlush() {
	if s.manualFlush {
		return
	}
	select {
	case s.flushReq <- struct{}{}:
	default: // a flush is already requested
	}
}

// flusher runs flushes one at a time, until Close.
func (s *Store) flusher() {
	defer close(s.flusherDone)
	for {
		select {
		case <-s.flushReq:
			if err := s.Flush(); err != nil {
				slog.Warn("image store: flush pending data to disk", "err", err)
			}
		case <-s.closing:
			return
		}
	}
}

// Close stops the background flusher and flushes what is pending. The
// database stays open: it belongs to the caller.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	<-s.flusherDone
	return s.Flush()
}

// Flush makes every record pending now durable: it syncs the store's
// filesystem, then clears the marks it saw before the sync began (a record
// added meanwhile waits for the next flush).
func (s *Store) Flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	images, layers, err := s.pending(func(boot string) bool { return boot == s.boot })
	if err != nil || len(images)+len(layers) == 0 {
		return err
	}
	f, err := os.Open(s.root)
	if err != nil {
		return err
	}
	err = syncfs(int(f.Fd()))
	f.Close()
	if err != nil {
		return fmt.Errorf("sync %s: %w", s.root, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, id := range images {
			if err := clearPending(tx.Bucket(imagesBucket), id, &Image{}); err != nil {
				return err
			}
		}
		for _, id := range layers {
			if err := clearPending(tx.Bucket(layersBucket), id, &layerRecord{}); err != nil {
				return err
			}
		}
		return nil
	})
}

// pendingRecord is what images and layers share: the mark.
type pendingRecord interface{ pendingBoot() *string }

func (i *Image) pendingBoot() *string       { return &i.Pending }
func (r *layerRecord) pendingBoot() *string { return &r.Pending }

func clearPending(b *bolt.Bucket, key digest.Digest, rec pendingRecord) error {
	v := b.Get([]byte(key))
	if v == nil {
		return nil // removed meanwhile
	}
	if err := json.Unmarshal(v, rec); err != nil {
		return err
	}
	*rec.pendingBoot() = ""
	return putJSON(b, []byte(key), rec)
}

// pending lists the image IDs and layer chain IDs marked with a boot ID
// that match selects.
func (s *Store) pending(match func(boot string) bool) (images, layers []digest.Digest, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		scan := func(bucket []byte, rec func() pendingRecord, out *[]digest.Digest) error {
			return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
				r := rec()
				if json.Unmarshal(v, r) == nil && *r.pendingBoot() != "" && match(*r.pendingBoot()) {
					*out = append(*out, digest.Digest(k))
				}
				return nil
			})
		}
		if err := scan(imagesBucket, func() pendingRecord { return &Image{} }, &images); err != nil {
			return err
		}
		return scan(layersBucket, func() pendingRecord { return &layerRecord{} }, &layers)
	})
	return images, layers, err
}

// dropLost removes what a crash of the machine may have lost: images and
// layers marked pending in an earlier boot. Their blobs and directories
// go with the collection that follows.
func (s *Store) dropLost() error {
	images, layers, err := s.pending(func(boot string) bool { return boot != s.boot })
	if err != nil || len(images)+len(layers) == 0 {
		return err
	}
	slog.Warn("image store: removing images pulled just before a crash of the machine", "images", len(images), "layers", len(layers))
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, id := range images {
			img, err := readImage(tx, id)
			if err != nil {
				continue
			}
			if _, err := purgeImage(tx, img); err != nil {
				return err
			}
		}
		// A lost layer goes even if a later image (itself lost, or
		// recorded since) counted on it; images that use it go too.
		lost := map[digest.Digest]bool{}
		for _, l := range layers {
			lost[l] = true
			if err := tx.Bucket(layersBucket).Delete([]byte(l)); err != nil {
				return err
			}
		}
		var victims []*Image
		err := tx.Bucket(imagesBucket).ForEach(func(k, _ []byte) error {
			img, err := readImage(tx, digest.Digest(k))
			if err != nil {
				return err
			}
			for _, l := range img.Layers {
				if lost[l.ChainID] {
					victims = append(victims, img)
					break
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, img := range victims {
			if _, err := purgeImage(tx, img); err != nil {
				return err
			}
		}
		return nil
	})
}
