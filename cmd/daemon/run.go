package main

import (
	"context"
	"io"
	"os"
	"os/signal"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/berth-containers/berth/pkg/runtime"
)

func (c *runtimeCLI) runCmd() *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use: "run [flags] ID", Short: "Create and start a container; wait for it unless detached", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.logged(c.run(cmd.Context(), args[0], &f))
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVarP(&f.detach, "detach", "d", false, "do not wait for the container")
	return cmd
}

func (c *runtimeCLI) run(ctx context.Context, id string, f *createFlags) error {
	opts := []runtime.CreateOpt{stdio()}
	consoles := make(chan *os.File, 1)
	if f.consoleSocket == "" {
		opts = append(opts, runtime.WithConsole(func(m *os.File) error { consoles <- m; return nil }))
	}
	var forwardTo func(*runtime.Container)
	if !f.detach {
		forwardTo = forwardSignals()
	}
	ctr, err := c.create(ctx, id, f, opts...)
	if err != nil {
		return err
	}
	if f.detach {
		return ctr.Start(ctx)
	}
	forwardTo(ctr)
	select {
	case m := <-consoles:
		restore := attachConsole(m)
		defer restore()
	default:
	}
	if err := ctr.Start(ctx); err != nil {
		_ = ctr.Delete(context.WithoutCancel(ctx), true)
		return err
	}
	code, err := ctr.Wait(ctx)
	if derr := ctr.Delete(context.WithoutCancel(ctx), true); err == nil {
		err = derr
	}
	if err == nil && code != 0 {
		return exitError(code)
	}
	return err
}

// attachConsole wires our terminal to the container's pty: raw mode, copy
// both ways, window size on SIGWINCH. It returns the undo function.
func attachConsole(master *os.File) func() {
	in := int(os.Stdin.Fd())
	var old *term.State
	if term.IsTerminal(in) {
		old, _ = term.MakeRaw(in)
		resize(in, master)
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	go func() {
		for range winch {
			resize(in, master)
		}
	}()
	go func() { _, _ = io.Copy(master, os.Stdin) }()
	done := make(chan struct{})
	go func() { _, _ = io.Copy(os.Stdout, master); close(done) }()
	return func() {
		<-done
		signal.Stop(winch)
		if old != nil {
			_ = term.Restore(in, old)
		}
		master.Close()
	}
}

func resize(from int, to *os.File) {
	if ws, err := unix.IoctlGetWinsize(from, unix.TIOCGWINSZ); err == nil {
		_ = unix.IoctlSetWinsize(int(to.Fd()), unix.TIOCSWINSZ, ws)
	}
}
