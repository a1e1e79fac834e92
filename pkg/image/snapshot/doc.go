// Package snapshot turns an image's layer directories into a container's
// root filesystem. The overlay driver mounts them read-only below a
// per-container upper directory; where overlayfs is missing, the copy
// driver applies them one after the other onto a plain directory, as
// Docker's vfs driver does. Both give the same view, which the shared
// conformance tests check.
//
// A container's snapshot directory holds upper/ and work/ (overlay) and
// rootfs/, the root filesystem handed to the runtime.
package snapshot
