// Package shim is the small process that watches over one container, so
// that the container outlives berthd: "berthd __berth_shim DIR", a re-exec of
// berthd in a session of its own. It creates and starts the container with
// the runtime (it is the container's parent), holds its stdio (pipes, or
// the pty master for a terminal), copies its output into the json-file log
// and to attached clients, records the exit status in DIR/exit.json and
// ends.
//
//	berthd (Create, Start)                      berthd __berth_shim DIR
//	  write DIR/shim.json
//	  start shim: setsid, stdio /dev/null,
//	  status pipe on fd 3, release on fd 4 ---->  listen DIR/shim.sock
//	                                              runtime Create
//	               <----------------------------  {"pid": N} | {"error": "..."}
//	  attach waiting clients (DIR/shim.sock)
//	  one byte on the release pipe ------------>  runtime Start
//	               <----------------------------  {"started": true} | {"error"}
//	                                              log and serve ... exit
//	                                              runtime Delete, unmount rootfs
//	                                              DIR/exit.json
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
//
// A berthd that restarts finds living containers through their runtime
// state and watches them again through the socket; finished ones through
// exit.json.
package shim
