package osthread

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// The main goroutine keeps the main thread from init on, and runs there
// what a test hands to onMainThread while the tests run on other
// goroutines.
func init() { runtime.LockOSThread() }

var mainThread = make(chan func())

func TestMain(m *testing.M) {
	done := make(chan int)
	go func() { done <- m.Run() }()
	for {
		select {
		case fn := <-mainThread:
			fn()
		case code := <-done:
			os.Exit(code)
		}
	}
}

func onMainThread(fn func()) {
	done := make(chan struct{})
	mainThread <- func() { fn(); close(done) }
	<-done
}

// TestNeverOnMainThread: called from the main thread, fn runs on another
// thread, and what it changes (here its mount namespace) leaves the
// process's as it was. Without the main-thread check it fails.
func TestNeverOnMainThread(t *testing.T) {
	if os.Geteuid() != 0 {
		// Not testutil.RequiresRoot: testutil imports this package.
		if os.Getenv("CI") == "true" {
			t.Fatal("this test needs root, and CI runs as root")
		}
		t.Skip("unshare(CLONE_NEWNS) needs root")
	}
	before, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	var tid int
	onMainThread(func() {
		err = lockedRun(func() error {
			tid = unix.Gettid()
			return unix.Unshare(unix.CLONE_NEWNS)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if tid == os.Getpid() {
		t.Error("fn ran on the main thread")
	}
	if after, _ := os.Readlink("/proc/self/ns/mnt"); after != before {
		t.Errorf("the process's mount namespace changed: %s, was %s", after, before)
	}
}
