package shim

import (
	"io"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

// TestReadRequest: the request line is read whole, in one write or in
// pieces, and what follows it (an attach client's input) stays unread.
func TestReadRequest(t *testing.T) {
	for _, writes := range [][]string{
		{`{"wait":true,"record":true}` + "\ninput"},
		{`{"wait":`, `true,"record":true}`, "\ninput"},
	} {
		server, client := unixPair(t)
		go func() {
			for _, w := range writes {
				_, _ = client.Write([]byte(w))
			}
			_ = client.CloseWrite()
		}()
		req, err := readRequest(server)
		if err != nil || !req.Wait || !req.Record {
			t.Fatalf("%q: request %+v, err %v", writes, req, err)
		}
		if rest, _ := io.ReadAll(server); string(rest) != "input" {
			t.Errorf("%q: after the request: %q, want the input", writes, rest)
		}
	}
	server, client := unixPair(t)
	_ = client.Close()
	if _, err := readRequest(server); err == nil {
		t.Error("a client gone before its request: no error")
	}
}
