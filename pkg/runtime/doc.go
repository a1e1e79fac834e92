// Package runtime turns an OCI runtime-spec bundle into a contained process.
//
// A container goes through the lifecycle of the OCI runtime spec:
//
//	Create  -> "created": namespaces, cgroup, mounts, pivot_root, hostname and
//	           console are set up; the init process waits on <state>/exec.fifo
//	Start   -> "running": opening the fifo releases init, which drops
//	           credentials and capabilities, sets no_new_privs and seccomp,
//	           and execve()s the user process, which becomes PID 1
//	Kill    -> a signal to that process
//	Wait    -> its exit status (128+signal when a signal ended it); only for
//	           the process that created the container, as for any child
//	Delete  -> "stopped" containers lose their cgroup and state directory
//
// The container init is the calling binary itself, re-executed from a copy
// nobody can write (see exeseal_linux.go) with the argument InitArg. A binary that
// uses this package must call Init first thing in main (or TestMain) when
// IsInit reports true. The parent and init talk over a socketpair; the
// protocol is drawn in sync.go.
//
// config.json and the sync messages go through
// github.com/go-json-experiment/json/v1: encoding/json's API and semantics on
// the engine of encoding/json/v2 (standard from Go 1.27). Both the command
// line and the container init are fresh processes that decode the spec once,
// and that first decode, which builds the tables for the spec's types, takes
// half of encoding/json's time: 0.3 against 0.7 ms for `crun spec`'s config,
// 0.55 against 1.1 ms for one with Docker's seccomp profile. state.json,
// which berthd reads too, stays with encoding/json: berthd keeps one engine
// (a second cost it 0.4 MiB of idle RSS).
//
// State lives in <root>/<id>/state.json, so separate processes (the
// runc-compatible command line: create, then start, state, kill, delete) can
// drive one container.
package runtime
