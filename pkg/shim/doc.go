// Package shim is the small process that watches over one container, so
// that the container outlives berthd: "berthd __berth_shim DIR", a re-exec of
// berthd in a session of its own. It creates and starts the container with
// the runtime (it is the container's parent), holds its stdio (pipes, or
// the pty master for a terminal), copies its output into the json-file log
// and to attached clients, records the exit status in DIR/exit.json and
// ends.
//
// Once the container's init is released (an exec's process, or a
// container with poststart hooks: once it runs), the shim becomes
// berth-monitor (cmd/monitor, a small C program installed beside berthd)
// with execve: same pid, so still the process's parent, same socket, stdio
// and clients. The monitor reads the start's outcome on init's sync socket
// and reports it on the status pipe: the shim's execve (2 ms of a Go
// process's teardown) runs while init drops its privileges and execs, and
// a short container's exit is reaped as soon as it comes. The monitor does
// the watching in under 1 MB RSS where a Go shim takes 7 (a Go program
// maps whole page-cache folios of berthd's 16 MB binary as it runs). Until
// the handover the shim reads no output and only registers attach
// clients, so nothing is read twice or lost. When the container has ended
// and its output is drained, the monitor writes exit.json itself if
// berthd watches (see AwaitEnd; berthd releases the rest), or runs
// "berthd __berth_shim_exit DIR CODE [ERROR]" (RecordEnd: runtime Delete,
// unmount, exit.json; ERROR: why the start failed), then closes its
// clients and ends (for an exec, the end is only written down).
// Without berth-monitor beside berthd, the Go shim watches to the end
// itself.
//
//	berthd (Create, Start)                      berthd __berth_shim DIR
//	  write DIR/shim.json
//	  start shim: setsid, stdio /dev/null,
//	  status pipe on fd 3, release on fd 4 ---->  listen DIR/shim.sock
//	                                              runtime Create
//	               <----------------------------  {"pid": N} | {"error": "..."}
//	  attach waiting clients (DIR/shim.sock)
//	  one byte on the release pipe ------------>  runtime Release (exec fifo)
//	                                              execve berth-monitor:
//	               <----------------------------  {"started": true} | {"error"}
//	                                              (EOF or error on init's sync socket)
//	                                              log and serve ... exit
//	                                              berthd __berth_shim_exit:
//	                                                runtime Delete, unmount rootfs,
//	                                                DIR/exit.json
//	                                              close watchers and attachers
//
// DIR/shim.sock takes one JSON line, then:
//
//	{"attach": {"stdin": true, "stdout": true, "stderr": true}}
//	    one ack byte, then output (raw for a terminal, else Docker's
//	    8-byte multiplexed frames) until the end; what the client writes is
//	    the container's stdin.
//	{"resize": {"height": 24, "width": 80}}   sets the terminal's size.
//	{"wait": true}   closed once exit.json is written.
//	{"wait": true, "record": true}   the same, from berthd, which so says
//	    it watches and releases the container after its end: berth-monitor
//	    then only writes exit.json (see AwaitEnd); a Go shim records the
//	    end itself either way.
//
// A berthd that restarts finds living containers through their runtime
// state and watches them again through the socket; finished ones through
// exit.json.
package shim
