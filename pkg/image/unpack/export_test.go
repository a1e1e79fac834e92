package unpack

import "testing"

// WithGoGunzip makes gzip streams go through Go's decoder, not igzip, for
// the rest of the test.
func WithGoGunzip(t testing.TB) {
	old := igzipPath
	igzipPath = func() string { return "" }
	t.Cleanup(func() { igzipPath = old })
}
