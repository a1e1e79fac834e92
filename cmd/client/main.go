// Command berth is berth's command-line client: docker's commands and
// flags over berthd's Docker Engine API (Docker's own Go client, so the
// wire types are Docker's): container, image and system commands.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// defaultHost is berthd's socket; BERTH_HOST or -H override it.
const defaultHost = "unix:///run/berth/berth.sock"

// cli carries the global flags to the commands.
type cli struct {
	host string
	tls  tlsFlags
	api  *client.Client
}

// tlsFlags are the docker CLI's: --tlsverify (or DOCKER_TLS_VERIFY) turns
// mutual TLS on, with ca.pem, cert.pem and key.pem from DOCKER_CERT_PATH
// (default ~/.docker) unless named.
type tlsFlags struct {
	verify        bool
	ca, cert, key string
}

func (f *tlsFlags) register(fl *pflag.FlagSet) {
	dir := os.Getenv("DOCKER_CERT_PATH")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".docker")
		}
	}
	fl.BoolVar(&f.verify, "tlsverify", os.Getenv("DOCKER_TLS_VERIFY") != "", "use mutual TLS and verify berthd's certificate (or DOCKER_TLS_VERIFY)")
	fl.StringVar(&f.ca, "tlscacert", filepath.Join(dir, "ca.pem"), "CA that signed berthd's certificate (DOCKER_CERT_PATH/ca.pem)")
	fl.StringVar(&f.cert, "tlscert", filepath.Join(dir, "cert.pem"), "client certificate (DOCKER_CERT_PATH/cert.pem)")
	fl.StringVar(&f.key, "tlskey", filepath.Join(dir, "key.pem"), "client key (DOCKER_CERT_PATH/key.pem)")
}

// client connects lazily, so that `berth --help` needs no daemon.
func (c *cli) client() (*client.Client, error) {
	if c.api != nil {
		return c.api, nil
	}
	opts := []client.Opt{client.WithHost(c.host)} // negotiates the API version
	if c.tls.verify {
		opts = append(opts, client.WithTLSClientConfig(c.tls.ca, c.tls.cert, c.tls.key))
	}
	api, err := client.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("berthd at %s: %w", c.host, err)
	}
	c.api = api
	return api, nil
}

func main() {
	c := &cli{}
	root := &cobra.Command{
		Use:           "berth",
		Short:         "A small, fast container engine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	host := os.Getenv("BERTH_HOST")
	if host == "" {
		host = defaultHost
	}
	root.PersistentFlags().StringVarP(&c.host, "host", "H", host, "berthd's address: unix://PATH or tcp://HOST:2376 (or BERTH_HOST)")
	c.tls.register(root.PersistentFlags())
	root.AddCommand(c.versionCmd(), c.infoCmd(), c.loginCmd(), c.logoutCmd(), c.imageCmd(), c.systemCmd())
	root.AddCommand(c.containerCmd(), c.psCmd(), c.buildCmd(), c.builderCmd(), c.networkCmd())
	root.AddCommand(c.containerCommands()...)
	root.AddCommand(c.imageCommands()...) // docker's top-level aliases: images, pull, push, rmi...
	if err := root.Execute(); err != nil {
		var st statusError
		if errors.As(err, &st) {
			os.Exit(int(st))
		}
		fmt.Fprintln(os.Stderr, "berth:", err)
		var ce codedError
		if errors.As(err, &ce) {
			os.Exit(ce.code)
		}
		os.Exit(1)
	}
}

// statusError ends berth with an exit code and no message.
type statusError int

func (s statusError) Error() string { return fmt.Sprintf("exit status %d", int(s)) }

// codedError ends berth with its message and an exit code.
type codedError struct {
	err  error
	code int
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

// startError is what `docker run` exits with when the container could not
// start: 127 for a command not found, 126 for one that cannot run, else
// 125 (the engine's error).
func startError(err error) error {
	msg := err.Error()
	code := 125
	switch {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		code = 127
	case strings.Contains(msg, syscall.EACCES.Error()), strings.Contains(msg, syscall.EISDIR.Error()):
		code = 126
	}
	return codedError{err, code}
}
