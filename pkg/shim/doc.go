// Package shim is the small process that watches over one container, so
// that the container outlives berthd: "berthd __berth_shim DIR", a re-exec of
// berthd in a session of its own. It creates and starts the container with
// the runtime (it is the container's parent), copies its output into the
// json-file log (a pty's output, for a terminal), records the exit status
// in DIR/exit.json, deletes the runtime state and exits.
//
//	berthd (Start)                              berthd __berth_shim DIR
//	  write DIR/shim.json
//	  start shim: setsid, stdio /dev/null,
//	  status pipe on fd 3 --------------------->  runtime Create + Start
//	               <----------------------------  {"pid": N} | {"error": "..."}
//	  return pid                                  log stdout/stderr ... exit
//	                                              DIR/exit.json, runtime Delete
//
// A berthd that restarts finds living containers through their runtime
// state and finished ones through exit.json.
package shim
