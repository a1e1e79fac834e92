// Package image will hold berth's image side: registry -> content store ->
// unpack -> snapshot -> container rootfs (issue 3). It is empty today; the
// runtime takes a rootfs directory from an OCI bundle.
package image
