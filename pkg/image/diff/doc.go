// Package diff writes a directory in overlayfs' format (a layer directory,
// or a container's upper directory) as an OCI layer tar: 0:0 character
// devices become ".wh.<name>" whiteouts and directories with the
// trusted.overlay.opaque xattr get a ".wh..wh..opq" marker, right after
// the directory's own entry. Entries come in lexical order with
// hardlinks, xattrs, owners, modes and modification times, so the same
// directory always gives the same bytes.
package diff
