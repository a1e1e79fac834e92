package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/runtime"
)

// runtimeCLI holds the global flags of `berthd runtime`, named as runc's so
// that tools written for runc (containerd, benchmarks) can drive berth.
type runtimeCLI struct {
	root      string
	logPath   string
	logFormat string
	debug     bool
	systemd   bool
	rt        *runtime.Runtime
}

func newRuntimeCommand() *cobra.Command {
	c := &runtimeCLI{}
	cmd := &cobra.Command{
		Use:   "runtime",
		Short: "Run OCI bundles (a runc-compatible command line)",
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return c.setup()
		},
	}
	f := cmd.PersistentFlags()
	f.StringVar(&c.root, "root", "/run/berth/runtime", "directory for container state")
	f.StringVar(&c.logPath, "log", "", "also write errors to this file")
	f.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	f.BoolVar(&c.debug, "debug", false, "log debug messages")
	f.BoolVar(&c.systemd, "systemd-cgroup", false, "not supported: berth manages cgroupfs directly")
	cmd.AddCommand(c.createCmd(), c.runCmd(), c.startCmd(), c.stateCmd(), c.killCmd(),
		c.deleteCmd(), c.listCmd(), c.specCmd())
	return cmd
}

func (c *runtimeCLI) setup() error {
	if c.systemd {
		return fmt.Errorf("--systemd-cgroup: not supported, berth manages cgroups directly")
	}
	if c.logPath != "" {
		f, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		var h slog.Handler = slog.NewTextHandler(f, nil)
		if c.logFormat == "json" {
			h = slog.NewJSONHandler(f, nil)
		}
		slog.SetDefault(slog.New(h))
	}
	rt, err := runtime.New(c.root)
	c.rt = rt
	return err
}

// logged records err in the --log file too, as runc does for containerd.
func (c *runtimeCLI) logged(err error) error {
	if err != nil && c.logPath != "" {
		slog.Error(err.Error())
	}
	return err
}

type createFlags struct {
	bundle, pidFile, consoleSocket string
	detach                         bool
}

func (f *createFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.bundle, "bundle", "b", ".", "bundle directory (holding config.json)")
	cmd.Flags().StringVar(&f.pidFile, "pid-file", "", "write the container's pid to this file")
	cmd.Flags().StringVar(&f.consoleSocket, "console-socket", "", "unix socket to send the pty master to")
	cmd.Flags().Bool("no-pivot", false, "accepted for runc compatibility; berth always uses pivot_root")
	cmd.Flags().Bool("no-new-keyring", false, "accepted for runc compatibility")
}

func (c *runtimeCLI) createCmd() *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use: "create [flags] ID", Short: "Create a container from a bundle", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := c.create(cmd.Context(), args[0], &f, stdio())
			return c.logged(err)
		},
	}
	f.register(cmd)
	return cmd
}

func stdio() runtime.CreateOpt { return runtime.WithStdio(os.Stdin, os.Stdout, os.Stderr) }

func (c *runtimeCLI) create(ctx context.Context, id string, f *createFlags, opts ...runtime.CreateOpt) (*runtime.Container, error) {
	if f.consoleSocket != "" {
		opts = append(opts, runtime.WithConsole(func(m *os.File) error { return sendConsole(f.consoleSocket, m) }))
	}
	ctr, err := c.rt.Create(ctx, id, f.bundle, opts...)
	if err != nil {
		return nil, err
	}
	if f.pidFile != "" {
		if err := writePidFile(f.pidFile, ctr.Pid()); err != nil {
			_ = ctr.Delete(ctx, true)
			return nil, err
		}
	}
	return ctr, nil
}

func writePidFile(path string, pid int) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return os.Rename(tmp, path)
}

// sendConsole passes the pty master over the console socket, as runc does.
func sendConsole(socket string, master *os.File) error {
	defer master.Close()
	conn, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(conn)
	if err := unix.Connect(conn, &unix.SockaddrUnix{Name: socket}); err != nil {
		return fmt.Errorf("connect console socket %s: %w", socket, err)
	}
	return unix.Sendmsg(conn, []byte(master.Name()), unix.UnixRights(int(master.Fd())), nil, 0)
}

func (c *runtimeCLI) startCmd() *cobra.Command {
	return &cobra.Command{
		Use: "start ID", Short: "Start a created container", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctr, err := c.rt.Load(args[0])
			if err == nil {
				err = ctr.Start(cmd.Context())
			}
			return c.logged(err)
		},
	}
}

func (c *runtimeCLI) stateCmd() *cobra.Command {
	return &cobra.Command{
		Use: "state ID", Short: "Print a container's state as JSON", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctr, err := c.rt.Load(args[0])
			if err != nil {
				return c.logged(err)
			}
			st, err := ctr.State()
			if err != nil {
				return c.logged(err)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st)
		},
	}
}

func (c *runtimeCLI) killCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "kill ID [SIGNAL]", Short: "Send a signal (default SIGTERM) to a container", Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig := unix.SIGTERM
			if len(args) == 2 {
				var err error
				if sig, err = parseSignal(args[1]); err != nil {
					return c.logged(err)
				}
			}
			ctr, err := c.rt.Load(args[0])
			if err == nil {
				err = ctr.Kill(sig)
			}
			return c.logged(err)
		},
	}
	cmd.Flags().BoolP("all", "a", false, "accepted for runc compatibility: the pid namespace ends with its init")
	return cmd
}

func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("signal %q: unknown", s)
}

func (c *runtimeCLI) deleteCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "delete [--force] ID", Short: "Delete a stopped container", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctr, err := c.rt.Load(args[0])
			if err == nil {
				err = ctr.Delete(cmd.Context(), force)
			}
			return c.logged(err)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill the container first if it is running")
	return cmd
}

func (c *runtimeCLI) listCmd() *cobra.Command {
	return &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List containers", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := c.rt.List()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tPID\tSTATUS\tBUNDLE\tCREATED")
			for _, id := range ids {
				ctr, err := c.rt.Load(id)
				if err != nil {
					continue
				}
				if st, err := ctr.State(); err == nil {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", id, st.Pid, st.Status, st.Bundle, st.Created.Format("2006-01-02T15:04:05Z"))
				}
			}
			return w.Flush()
		},
	}
}

func (c *runtimeCLI) specCmd() *cobra.Command {
	var bundle string
	cmd := &cobra.Command{
		Use: "spec [-- COMMAND...]", Short: "Write a config.json with Docker's defaults", Args: cobra.ArbitraryArgs,
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"sh"}
			}
			s, err := runtime.DefaultSpec("rootfs", args...)
			if err != nil {
				return err
			}
			b, err := json.MarshalIndent(s, "", "  ")
			if err != nil {
				return err
			}
			p := filepath.Join(bundle, "config.json")
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s already exists", p)
			}
			return os.WriteFile(p, append(b, '\n'), 0o644)
		},
	}
	cmd.Flags().StringVarP(&bundle, "bundle", "b", ".", "bundle directory to write config.json into")
	return cmd
}

// forwardSignals relays the signals a user sends to `runtime run` to the
// container, as runc does for a foreground container. Catching starts at
// once but off the start path, in its own goroutine: the first
// signal.Notify of a process costs about half a millisecond. Signals that
// arrive before the container exists wait in the channel. The returned
// function hands over the container; the process exits after it, so the
// forwarder is never torn down.
func forwardSignals() func(*runtime.Container) {
	ch := make(chan os.Signal, 8)
	go signal.Notify(ch, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2)
	target := make(chan *runtime.Container, 1)
	go func() {
		ctr := <-target
		for s := range ch {
			_ = ctr.Kill(s.(syscall.Signal))
		}
	}()
	return func(ctr *runtime.Container) { target <- ctr }
}
