package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// dial connects to the shim of the container in dir and sends req.
func dial(dir string, req request) (*net.UnixConn, error) {
	// Through the directory's fd: DIR may be longer than a socket address
	// allows (108 bytes).
	d, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	addr := fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), socketFile)
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connect to shim: %w", err)
	}
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect to shim: %w", err)
	}
	return c, nil
}

// Attach connects to the container's streams: what is written to the
// connection goes to its stdin (CloseWrite ends it), what is read is its
// output, raw for a terminal and in Docker's multiplexed frames otherwise,
// until the container ends.
func Attach(dir string, o AttachOptions) (*net.UnixConn, error) {
	c, err := dial(dir, request{Attach: &o})
	if err != nil {
		return nil, err
	}
	// Once the ack is here, no output is missed.
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil || ack[0] != attachAck {
		c.Close()
		return nil, fmt.Errorf("attach: the shim did not accept: %v", err)
	}
	return c, nil
}

// Resize sets the size of the container's terminal.
func Resize(dir string, size Size) error {
	c, err := dial(dir, request{Resize: &size})
	if err != nil {
		return err
	}
	defer c.Close()
	b, _ := io.ReadAll(c)
	if msg := strings.TrimSpace(string(b)); msg != "" {
		return errors.New(msg)
	}
	return nil
}

// Watch returns a connection that the shim closes once the container's
// exit is recorded: AwaitEnd on it returns then. An error means no shim
// listens: the container ended already, or its shim died.
func Watch(dir string) (net.Conn, error) {
	c, err := dial(dir, request{Wait: true, Record: true})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Alive reports whether the shim of the container in dir still serves.
func Alive(dir string) bool {
	c, err := dial(dir, request{})
	if err != nil {
		return false
	}
	c.Close()
	return true
}
