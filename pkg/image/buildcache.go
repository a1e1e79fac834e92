package image

import (
	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// CacheGet returns the image the build step with this cache key made, if
// it is still stored.
func (s *Store) CacheGet(key digest.Digest) (*Image, bool) {
	var img *Image
	_ = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(cacheBucket).Get([]byte(key))
		if v == nil {
			return nil
		}
		img, _ = readImage(tx, digest.Digest(v))
		return nil
	})
	return img, img != nil
}

// CachePut records that the build step with this cache key made image id.
func (s *Store) CachePut(key, id digest.Digest) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(cacheBucket).Put([]byte(key), []byte(id))
	})
}

// PruneBuildCache forgets every cache key and deletes the images only the
// cache kept: those build steps made that have no name and that no
// container uses (inUse). It returns the deleted images.
func (s *Store) PruneBuildCache(inUse func(digest.Digest) bool) ([]digest.Digest, error) {
	forget := func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(cacheBucket); err != nil {
			return err
		}
		_, err := tx.CreateBucket(cacheBucket)
		return err
	}
	return s.deleteWhere(forget, func(img *Image) bool {
		return img.BuildCache && len(img.Names) == 0 && (inUse == nil || !inUse(img.ID))
	})
}
