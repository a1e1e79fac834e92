package unpack

import "testing"

// WithGoGunzip makes gzip streams go through Go's decoder, not igzip, for
// the rest of the test.
func WithGoGunzip(t testing.TB) { withIgzip(t, "") }

// WithIgzip makes Decompress take path for igzip for the rest of the test.
func WithIgzip(t testing.TB, path string) { withIgzip(t, path) }

func withIgzip(t testing.TB, path string) {
	old := igzipPath
	igzipPath = func() string { return path }
	t.Cleanup(func() { igzipPath = old })
}
