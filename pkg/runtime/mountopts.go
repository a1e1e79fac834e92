package runtime

import (
	"strings"

	"golang.org/x/sys/unix"
)

// mountOpts is a spec mount's options, sorted into per-mount attributes,
// propagation and filesystem data.
type mountOpts struct {
	attrSet, attrClr uint64
	propagation      uint64
	recursive        bool     // rbind, or an r* propagation
	data             []string // passed to the filesystem (fsconfig)
}

type attrOpt struct {
	clear bool
	attr  uint64
}

var attrOpts = map[string]attrOpt{
	"ro":          {false, unix.MOUNT_ATTR_RDONLY},
	"rw":          {true, unix.MOUNT_ATTR_RDONLY},
	"nosuid":      {false, unix.MOUNT_ATTR_NOSUID},
	"suid":        {true, unix.MOUNT_ATTR_NOSUID},
	"nodev":       {false, unix.MOUNT_ATTR_NODEV},
	"dev":         {true, unix.MOUNT_ATTR_NODEV},
	"noexec":      {false, unix.MOUNT_ATTR_NOEXEC},
	"exec":        {true, unix.MOUNT_ATTR_NOEXEC},
	"nodiratime":  {false, unix.MOUNT_ATTR_NODIRATIME},
	"diratime":    {true, unix.MOUNT_ATTR_NODIRATIME},
	"nosymfollow": {false, unix.MOUNT_ATTR_NOSYMFOLLOW},
}

var atimeOpts = map[string]uint64{
	"noatime":     unix.MOUNT_ATTR_NOATIME,
	"relatime":    unix.MOUNT_ATTR_RELATIME,
	"strictatime": unix.MOUNT_ATTR_STRICTATIME,
}

var propagationOpts = map[string]uint64{
	"private": unix.MS_PRIVATE, "shared": unix.MS_SHARED,
	"slave": unix.MS_SLAVE, "unbindable": unix.MS_UNBINDABLE,
}

// ignoredOpts have no meaning for a fresh mount made by the new mount API.
var ignoredOpts = map[string]bool{
	"bind": true, "defaults": true, "async": true, "sync": true, "dirsync": true,
	"mand": true, "nomand": true, "atime": true, "norelatime": true, "remount": true,
}

func parseMountOpts(opts []string) mountOpts {
	var o mountOpts
	for _, opt := range opts {
		if a, ok := attrOpts[opt]; ok {
			if a.clear {
				o.attrClr |= a.attr
				o.attrSet &^= a.attr
			} else {
				o.attrSet |= a.attr
				o.attrClr &^= a.attr
			}
			continue
		}
		if a, ok := atimeOpts[opt]; ok {
			o.attrClr |= unix.MOUNT_ATTR__ATIME
			o.attrSet = o.attrSet&^unix.MOUNT_ATTR__ATIME | a
			continue
		}
		if p, ok := propagationOpts[strings.TrimPrefix(opt, "r")]; ok && opt != "ro" && opt != "rw" {
			o.propagation = p
			o.recursive = o.recursive || strings.HasPrefix(opt, "r")
			continue
		}
		switch {
		case opt == "rbind":
			o.recursive = true
		case ignoredOpts[opt]:
		default:
			o.data = append(o.data, opt)
		}
	}
	return o
}

// propagationFlag maps linux.rootfsPropagation to mount(2) flags.
func propagationFlag(s string) (uintptr, bool) {
	if s == "" {
		return unix.MS_PRIVATE | unix.MS_REC, true
	}
	p, ok := propagationOpts[strings.TrimPrefix(s, "r")]
	if !ok {
		return 0, false
	}
	return uintptr(p) | unix.MS_REC, true
}
