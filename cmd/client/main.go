// Command berth is berth's command-line client: docker's commands and
// flags over berthd's Docker Engine API (Docker's own Go client, so the
// wire types are Docker's): container, image and system commands.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

// defaultHost is berthd's socket; BERTH_HOST or -H override it.
const defaultHost = "unix:///run/berth/berth.sock"

// cli carries the global flags to the commands.
type cli struct {
	host string
	api  *client.Client
}

// client connects lazily, so that `berth --help` needs no daemon.
func (c *cli) client() (*client.Client, error) {
	if c.api != nil {
		return c.api, nil
	}
	api, err := client.New(client.WithHost(c.host)) // negotiates the API version
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
	root.PersistentFlags().StringVarP(&c.host, "host", "H", host, "berthd's address (or BERTH_HOST)")
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
		os.Exit(1)
	}
}

// statusError ends berth with an exit code and no message.
type statusError int

func (s statusError) Error() string { return fmt.Sprintf("exit status %d", int(s)) }
