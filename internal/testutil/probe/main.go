// Command probe answers questions from inside a test container: it is built
// static (CGO_ENABLED=0) and copied into the busybox rootfs of the tests,
// as crun's tests/init.c. Each verb prints one line (or a few) and exits 0
// unless the verb itself is about exit codes.
package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe VERB [ARGS]")
		os.Exit(2)
	}
	verbs := map[string]func([]string){
		"pid": func([]string) { fmt.Println(os.Getpid()) },
		"hostname": func([]string) {
			h, _ := os.Hostname()
			fmt.Println(h)
		},
		"procs":    procs,
		"udp-echo": udpEcho,
		"mounts":   mounts,
		"status":   status,
		"alloc":    alloc,
		"forkbomb": forkbomb,
		"write":    func(a []string) { report(os.WriteFile(a[0], []byte("x"), 0o644)) },
		"read":     read,
		"open":     open,
		"keyctl":   keyctl,
		"fds":      fds,
		"exit": func(a []string) {
			n, _ := strconv.Atoi(a[0])
			os.Exit(n)
		},
		"sleep": func(a []string) {
			d, _ := time.ParseDuration(a[0])
			time.Sleep(d)
		},
		"id": func([]string) {
			g, _ := os.Getgroups()
			fmt.Println(os.Getuid(), os.Getgid(), g)
		},
		"rlimit": func([]string) {
			var r unix.Rlimit
			_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &r)
			fmt.Println(r.Cur, r.Max)
		},
		"cwd": func([]string) {
			d, err := os.Getwd()
			fmt.Println(d, err)
		},
		"isatty": func([]string) {
			_, err := unix.IoctlGetTermios(0, unix.TCGETS)
			fmt.Println(err == nil)
		},
		"cat": func(a []string) {
			b, err := os.ReadFile(a[0])
			if err != nil {
				fmt.Println("error:", err)
				return
			}
			fmt.Print(string(b))
		},
	}
	fn, ok := verbs[os.Args[1]]
	if !ok {
		fmt.Fprintln(os.Stderr, "probe: unknown verb", os.Args[1])
		os.Exit(2)
	}
	fn(os.Args[2:])
}

// report prints "ok" or the errno name of err.
func report(err error) {
	if err == nil {
		fmt.Println("ok")
		return
	}
	var errno syscall.Errno
	if pe, ok := err.(*os.PathError); ok {
		err = pe.Err
	}
	if e, ok := err.(syscall.Errno); ok {
		errno = e
		fmt.Println(unix.ErrnoName(errno))
		return
	}
	fmt.Println("error:", err)
}

func procs([]string) {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, n)
		}
	}
	sort.Ints(pids)
	fmt.Println(pids)
}

func mounts([]string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			fmt.Println(f[4])
		}
	}
}

// status prints one field of /proc/self/status, e.g. CapEff.
func status(a []string) {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == a[0] {
			fmt.Println(strings.TrimSpace(v))
		}
	}
}

// alloc touches N MiB, page by page, then reports.
func alloc(a []string) {
	n, _ := strconv.Atoi(a[0])
	var keep [][]byte
	for i := 0; i < n; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		keep = append(keep, b)
	}
	fmt.Println("allocated", len(keep))
}

// forkbomb starts sleeping children until the kernel refuses, then reports
// how many it got and why it stopped.
func forkbomb(a []string) {
	limit, _ := strconv.Atoi(a[0])
	n := 0
	var err error
	for ; n < limit; n++ {
		cmd := exec.Command("/proc/self/exe", "sleep", "30s")
		if err = cmd.Start(); err != nil {
			break
		}
	}
	fmt.Println(n, err)
}

func read(a []string) {
	b, err := os.ReadFile(a[0])
	if err != nil {
		report(err)
		return
	}
	fmt.Println(len(b))
}

func open(a []string) {
	f, err := os.OpenFile(a[0], os.O_RDWR, 0)
	if err == nil {
		f.Close()
	}
	report(err)
}

func keyctl([]string) {
	_, _, e := unix.Syscall(unix.SYS_KEYCTL, 0, 0, 0)
	fmt.Println(unix.ErrnoName(e))
}

func fds([]string) {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		t, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+"="+t)
	}
	fmt.Println(strings.Join(out, " "))
}

// udpEcho answers each datagram on the UDP port args[0] with "echo: "
// and the datagram, until killed.
func udpEcho(args []string) {
	c, err := net.ListenPacket("udp4", ":"+args[0])
	if err != nil {
		report(err)
		return
	}
	fmt.Println("listening")
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			report(err)
			return
		}
		_, _ = c.WriteTo(append([]byte("echo: "), buf[:n]...), from)
	}
}
