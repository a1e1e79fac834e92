// Package testutil holds fixtures shared by berth's tests: the root check,
// a busybox root filesystem with the static probe binary, and OCI bundles.
package testutil
