package runtime

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

var rlimitTypes = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC,
	"RLIMIT_RSS": unix.RLIMIT_RSS, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

// setRlimits applies the spec's limits, clamped to init's own hard limits:
// raising a hard limit needs CAP_SYS_RESOURCE, which a root daemon on a VM
// or in a container may lack. The container gets the most it can have
// instead of failing to start (the same call fails for podman here).
func setRlimits(limits []specs.POSIXRlimit) error {
	for _, l := range limits {
		res := rlimitTypes[l.Type]
		var cur unix.Rlimit
		if err := unix.Getrlimit(res, &cur); err != nil {
			return fmt.Errorf("%s: %w", l.Type, err)
		}
		hard := min(l.Hard, cur.Max)
		lim := unix.Rlimit{Cur: min(l.Soft, hard), Max: hard}
		if err := unix.Setrlimit(res, &lim); err != nil {
			return fmt.Errorf("%s to %d:%d: %w", l.Type, lim.Cur, lim.Max, err)
		}
	}
	return nil
}
