package gpu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
)

// The ld cache (/etc/ld.so.cache) in the format glibc 2.32 and later write,
// from glibc's sysdeps/generic/dl-cache.h:
//
//	header (48 bytes): "glibc-ld.so.cache" "1.1", nlibs, len_strings,
//	                   flags, 3 bytes padding, extension_offset, 3 unused
//	nlibs entries (24 bytes): flags, key, value, osversion, hwcap (uint64)
//
// key (the soname) and value (the path) are offsets from the header's start.
const (
	ldCacheMagic    = "glibc-ld.so.cache1.1"
	ldCacheOldMagic = "ld.so-1.7.0"
	ldHeaderSize    = 48
	ldEntrySize     = 24
	// Entry flags: the library's type and its architecture.
	ldFlagELFLibc6 = 0x0003
	ldFlagTypeMask = 0x00ff
	ldFlagArchMask = 0xff00
)

// ldArch is the architecture flag of this machine's 64-bit libraries.
var ldArch = map[string]int32{"amd64": 0x0300, "arm64": 0x0a00, "ppc64le": 0x0500}[goruntime.GOARCH]

// readLDCache maps each 64-bit library's soname to its paths, in cache
// order (the order the dynamic loader prefers).
func readLDCache(path string) (map[string][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	libs, err := parseLDCache(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return libs, nil
}

func parseLDCache(b []byte) (map[string][]string, error) {
	if bytes.HasPrefix(b, []byte(ldCacheOldMagic)) {
		return nil, errors.New("the old ld.so.cache format (glibc before 2.32) is not supported")
	}
	if len(b) < ldHeaderSize || string(b[:len(ldCacheMagic)]) != ldCacheMagic {
		return nil, errors.New("not an ld.so.cache")
	}
	le := binary.LittleEndian
	n := int(le.Uint32(b[20:]))
	if n < 0 || n > (len(b)-ldHeaderSize)/ldEntrySize {
		return nil, fmt.Errorf("%d entries do not fit in %d bytes", n, len(b))
	}
	str := func(off uint32) (string, bool) {
		if int64(off) >= int64(len(b)) {
			return "", false
		}
		s := b[off:]
		end := bytes.IndexByte(s, 0)
		if end < 0 {
			return "", false
		}
		return string(s[:end]), true
	}
	libs := make(map[string][]string)
	for i := range n {
		e := b[ldHeaderSize+i*ldEntrySize:]
		flags := int32(le.Uint32(e))
		if flags&ldFlagTypeMask != ldFlagELFLibc6 || flags&ldFlagArchMask != ldArch {
			continue
		}
		key, ok1 := str(le.Uint32(e[4:]))
		value, ok2 := str(le.Uint32(e[8:]))
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("entry %d points outside the file", i)
		}
		libs[key] = append(libs[key], value)
	}
	return libs, nil
}
