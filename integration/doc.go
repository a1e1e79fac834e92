// Package integration holds berth's end-to-end tests: they build the real
// binaries and drive them as a user (or containerd) would. They need root;
// in CI (CI=true) a missing prerequisite fails them instead of skipping.
package integration
