// Command berth is berth's command-line client. It talks to berthd over the
// Docker Engine API; the container commands arrive with the daemon's API.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-containers/berth/internal/version"
)

func main() {
	root := &cobra.Command{
		Use:           "berth",
		Short:         "A small, fast container engine",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(&cobra.Command{
		Use: "version", Short: "Show the berth version", Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "Client:\n Version: %s\n", version.Version)
		},
	})
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "berth:", err)
		os.Exit(1)
	}
}
