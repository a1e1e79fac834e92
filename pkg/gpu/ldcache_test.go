package gpu

import (
	"os"
	"strings"
	"testing"
)

// TestReadHostLDCache reads the cache the host's ldconfig wrote: libc is in it.
func TestReadHostLDCache(t *testing.T) {
	if _, err := os.Stat("/etc/ld.so.cache"); err != nil {
		t.Skip("no /etc/ld.so.cache on this machine")
	}
	libs, err := readLDCache("/etc/ld.so.cache")
	if err != nil {
		t.Fatal(err)
	}
	paths := libs["libc.so.6"]
	if len(paths) == 0 || !strings.HasSuffix(paths[0], "/libc.so.6") {
		t.Fatalf("libc.so.6 -> %v, want its path (%d sonames read)", paths, len(libs))
	}
	if _, err := os.Stat(paths[0]); err != nil {
		t.Errorf("libc's path: %v", err)
	}
}

func TestParseLDCacheRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":     nil,
		"not cache": []byte("hello world, this is no cache at all, not at all!!"),
		"old":       []byte("ld.so-1.7.0\x00\x00\x00\x00\x00"),
		"too many":  append([]byte(ldCacheMagic+"\xff\xff\xff\x00"), make([]byte, 40)...),
	} {
		if _, err := parseLDCache(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}
