// Package image is berth's image store: registry or archive -> content
// store -> unpacked layers -> snapshot -> container root filesystem.
//
//	content/   content-addressed blobs (manifests, configs, compressed layers)
//	unpack/    one layer tar -> one directory, in overlayfs' format, safely
//	diff/      a directory in overlayfs' format -> a layer tar
//	snapshot/  layer directories -> a container's rootfs (overlay, or copy)
//	registry/  pull, push and login against OCI registries
//
// Store ties them together with metadata in bbolt: images by ID (the
// digest of their config), names pointing at IDs, and layers by chain ID
// with the number of images using each. Images enter through Put, from
// anything that is a go-containerregistry v1.Image (a registry, a docker
// save archive, an OCI layout, an imported rootfs), and leave through
// Image, which is one again.
package image
