// Package unpack extracts one image layer (a tar stream, plain, gzip or
// zstd) into a directory of its own, in overlayfs' format: a whiteout
// becomes a 0:0 character device and an opaque directory gets the
// trusted.overlay.opaque xattr, so the directory can be used as an overlay
// lower layer as is.
//
// A layer is untrusted input. Every entry is checked before anything is
// written: no absolute names, no ".." anywhere in a name or hardlink
// target, no path through a symlink (not even one written earlier by the
// same layer), no whiteout naming "." or "..". Writes go through
// directory fds opened inside the target with os.Root and *at system calls
// that do not follow a final symlink, so nothing is ever written outside
// the target. Sizes are bounded against decompression bombs.
package unpack
