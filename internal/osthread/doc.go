// Package osthread runs code on an OS thread of its own that ends with it,
// for what changes a thread for good: joining or making namespaces.
package osthread
