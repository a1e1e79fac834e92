package osthread

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// Throwaway runs fn on an OS thread that ends when fn returns, so
// whatever fn changed about its thread (its namespaces, its root) dies
// with it. Go cannot end the main thread, only park it, and /proc/self
// shows the main thread's namespaces: had fn run there, the whole process
// would go on reading, say, a container's /proc/self/mountinfo. So fn
// never runs there; the main thread, when it is the one drawn, is held
// until fn is done on another.
func Throwaway(fn func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- lockedRun(fn) }()
	return <-errc
}

// lockedRun runs fn on the calling goroutine's thread, locked for good,
// unless that is the main thread.
func lockedRun(fn func() error) error {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// Held here, the main thread cannot run the next goroutine.
		defer runtime.UnlockOSThread()
		return Throwaway(fn)
	}
	return fn() // never unlocked: the thread ends with the goroutine
}
