package main

import (
	"os"

	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func (c *cli) execCmd() *cobra.Command {
	var o client.ExecCreateOptions
	var detach bool
	var envFiles []string
	cmd := &cobra.Command{
		Use: "exec [OPTIONS] CONTAINER COMMAND [ARG...]", Short: "Run a command in a running container", Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if o.Env, err = readEnv(envFiles, o.Env); err != nil {
				return err
			}
			o.Cmd = args[1:]
			o.AttachStdout, o.AttachStderr = !detach, !detach
			o.AttachStdin = o.AttachStdin && !detach
			if o.TTY && term.IsTerminal(int(os.Stdout.Fd())) {
				if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
					o.ConsoleSize = client.ConsoleSize{Height: uint(h), Width: uint(w)}
				}
			}
			created, err := api.ExecCreate(ctx, args[0], o)
			if err != nil {
				return err
			}
			if detach {
				_, err := api.ExecStart(ctx, created.ID, client.ExecStartOptions{Detach: true, TTY: o.TTY})
				return err
			}
			att, err := api.ExecAttach(ctx, created.ID, client.ExecAttachOptions{TTY: o.TTY, ConsoleSize: o.ConsoleSize})
			if err != nil {
				return err
			}
			defer att.Close()
			resize := func(h, w uint) {
				_, _ = api.ExecResize(ctx, created.ID, client.ExecResizeOptions{Height: h, Width: w})
			}
			if err := pumpStreams(att.HijackedResponse, o.TTY, o.AttachStdin, resize); err != nil {
				return err
			}
			res, err := api.ExecInspect(ctx, created.ID, client.ExecInspectOptions{})
			if err != nil {
				return err
			}
			if res.ExitCode != 0 {
				return statusError(res.ExitCode)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.SetInterspersed(false)
	fl.BoolVarP(&detach, "detach", "d", false, "run the command in the background")
	fl.BoolVarP(&o.AttachStdin, "interactive", "i", false, "attach stdin")
	fl.BoolVarP(&o.TTY, "tty", "t", false, "give the command a terminal")
	fl.StringArrayVarP(&o.Env, "env", "e", nil, "set an environment variable")
	fl.StringArrayVar(&envFiles, "env-file", nil, "read environment variables from a file")
	fl.StringVarP(&o.WorkingDir, "workdir", "w", "", "working directory inside the container")
	fl.StringVarP(&o.User, "user", "u", "", "user NAME|UID[:GROUP|GID]")
	fl.BoolVar(&o.Privileged, "privileged", false, "give the command every capability")
	fl.StringVar(&o.DetachKeys, "detach-keys", "", "keys that detach from the command")
	return cmd
}
