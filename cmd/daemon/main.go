// Command berthd is berth's daemon. Today it carries the OCI runtime
// (`berthd runtime ...`, runc-compatible) and the image store (`berthd
// image ...`); it also serves as the container init, re-executed by the
// runtime before anything else runs.
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/berth-containers/berth/internal/version"
	"github.com/berth-containers/berth/pkg/runtime"
	"github.com/berth-containers/berth/pkg/shim"
)

func main() {
	// The private re-exec entry points come first, before flags or goroutines.
	if runtime.IsInit() {
		runtime.Init()
	}
	if len(os.Args) == 3 && os.Args[1] == shim.Arg {
		os.Exit(shim.Run(os.Args[2]))
	}
	if (len(os.Args) == 4 || len(os.Args) == 5) && os.Args[1] == shim.ExitArg {
		code, err := strconv.Atoi(os.Args[3])
		if err != nil {
			fmt.Fprintln(os.Stderr, "berthd:", err)
			os.Exit(2)
		}
		os.Exit(shim.RecordEnd(os.Args[2], code, os.Args[4:]...))
	}
	var serve serveFlags
	root := &cobra.Command{
		Use:           "berthd",
		Short:         "berth's daemon: serves the Docker Engine API; also an OCI runtime",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          serve.run,
	}
	serve.register(root)
	root.AddCommand(newRuntimeCommand(), newImageCommand())
	if err := root.Execute(); err != nil {
		code := 1
		if e, ok := err.(exitError); ok {
			code = int(e)
		} else {
			fmt.Fprintln(os.Stderr, "berthd:", err)
		}
		os.Exit(code)
	}
}

// exitError carries a container's exit code out of `runtime run` without a message.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
