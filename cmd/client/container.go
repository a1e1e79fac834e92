package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

// containerCmd is `berth container ...`; containerCommands are docker's
// top-level spellings (run, ps, rm, ...).
func (c *cli) containerCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "container", Short: "Manage containers"}
	ls := c.psCmd()
	ls.Use, ls.Aliases = "ls", []string{"list", "ps"}
	cmd.AddCommand(ls, c.containerPruneCmd())
	cmd.AddCommand(c.containerCommands()...)
	return cmd
}

func (c *cli) containerCommands() []*cobra.Command {
	cmds := []*cobra.Command{c.startCmd(), c.stopCmd(), c.restartCmd(), c.killCmd(), c.rmCmd(), c.logsCmd(),
		c.attachCmd(), c.waitCmd(), c.renameCmd(), c.containerInspectCmd(), c.execCmd(), c.portCmd()}
	for _, cmd := range cmds {
		cmd.ValidArgsFunction = c.completeContainers
	}
	return append(cmds, c.runCmd(), c.createCmd())
}

// eachContainer runs fn on every argument, printing each name that
// succeeded and reporting all failures, as docker's stop, rm, kill do.
func eachContainer(cmd *cobra.Command, args []string, fn func(id string) error) error {
	var failed []string
	for _, id := range args {
		if err := fn(id); err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), err)
			failed = append(failed, id)
			continue
		}
		fmt.Fprintln(cmd.OutOrStdout(), id)
	}
	if len(failed) > 0 {
		return statusError(1)
	}
	return nil
}

func (c *cli) startCmd() *cobra.Command {
	var attach, interactive bool
	var detachKeys string
	cmd := &cobra.Command{
		Use: "start [OPTIONS] CONTAINER...", Short: "Start containers", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			if attach || interactive {
				if len(args) > 1 {
					return errors.New("attach to one container at a time")
				}
				res, err := api.ContainerInspect(cmd.Context(), args[0], client.ContainerInspectOptions{})
				if err != nil {
					return err
				}
				cfg := res.Container.Config
				return c.attachAndStart(cmd, res.Container.ID, cfg.Tty, interactive && cfg.OpenStdin, false, detachKeys, true)
			}
			return eachContainer(cmd, args, func(id string) error {
				_, err := api.ContainerStart(cmd.Context(), id, client.ContainerStartOptions{})
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&attach, "attach", "a", false, "attach stdout and stderr")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "attach stdin")
	cmd.Flags().StringVar(&detachKeys, "detach-keys", "", "keys that detach from the container")
	return cmd
}

func (c *cli) attachCmd() *cobra.Command {
	var noStdin bool
	var detachKeys string
	cmd := &cobra.Command{
		Use: "attach [OPTIONS] CONTAINER", Short: "Attach to a running container's streams", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, res, err := c.inspectContainer(cmd, args[0])
			if err != nil {
				return err
			}
			if res.Container.State == nil || !res.Container.State.Running {
				return errors.New("you cannot attach to a stopped container, start it first")
			}
			cfg := res.Container.Config
			return c.attachAndStart(cmd, res.Container.ID, cfg.Tty, !noStdin && cfg.OpenStdin, false, detachKeys, false)
		},
	}
	cmd.Flags().BoolVar(&noStdin, "no-stdin", false, "do not attach stdin")
	cmd.Flags().StringVar(&detachKeys, "detach-keys", "", "keys that detach from the container")
	return cmd
}

// inspectContainer connects and inspects one container.
func (c *cli) inspectContainer(cmd *cobra.Command, ref string) (*client.Client, client.ContainerInspectResult, error) {
	api, err := c.client()
	if err != nil {
		return nil, client.ContainerInspectResult{}, err
	}
	res, err := api.ContainerInspect(cmd.Context(), ref, client.ContainerInspectOptions{})
	return api, res, err
}

// timeoutFlag is -t/--timeout of stop and restart.
func timeoutFlag(cmd *cobra.Command) *int {
	var t int
	cmd.Flags().IntVarP(&t, "timeout", "t", -2, "seconds to wait before killing (default: the container's, 10)")
	return &t
}

func stopOptions(t int, signal string) client.ContainerStopOptions {
	o := client.ContainerStopOptions{Signal: signal}
	if t != -2 {
		o.Timeout = &t
	}
	return o
}

func (c *cli) stopCmd() *cobra.Command {
	return c.stopLikeCmd("stop [OPTIONS] CONTAINER...", "Stop containers: their stop signal, then SIGKILL",
		func(cmd *cobra.Command, api *client.Client, id string, o client.ContainerStopOptions) error {
			_, err := api.ContainerStop(cmd.Context(), id, o)
			return err
		})
}

func (c *cli) restartCmd() *cobra.Command {
	return c.stopLikeCmd("restart [OPTIONS] CONTAINER...", "Restart containers",
		func(cmd *cobra.Command, api *client.Client, id string, o client.ContainerStopOptions) error {
			_, err := api.ContainerRestart(cmd.Context(), id, client.ContainerRestartOptions(o))
			return err
		})
}

// stopLikeCmd is stop or restart: -t and -s, then call on each container.
func (c *cli) stopLikeCmd(use, short string, call func(*cobra.Command, *client.Client, string, client.ContainerStopOptions) error) *cobra.Command {
	var signal string
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.MinimumNArgs(1)}
	t := timeoutFlag(cmd)
	cmd.Flags().StringVarP(&signal, "signal", "s", "", "signal to send first")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		api, err := c.client()
		if err != nil {
			return err
		}
		return eachContainer(cmd, args, func(id string) error { return call(cmd, api, id, stopOptions(*t, signal)) })
	}
	return cmd
}

func (c *cli) killCmd() *cobra.Command {
	var signal string
	cmd := &cobra.Command{
		Use: "kill [OPTIONS] CONTAINER...", Short: "Send a signal to containers (default SIGKILL)", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			return eachContainer(cmd, args, func(id string) error {
				_, err := api.ContainerKill(cmd.Context(), id, client.ContainerKillOptions{Signal: signal})
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&signal, "signal", "s", "", "signal to send (name or number)")
	return cmd
}

func (c *cli) rmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "rm [OPTIONS] CONTAINER...", Aliases: []string{"remove"}, Short: "Remove containers", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			return eachContainer(cmd, args, func(id string) error {
				_, err := api.ContainerRemove(cmd.Context(), id, client.ContainerRemoveOptions{Force: force})
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill and remove a running container")
	return cmd
}

func (c *cli) renameCmd() *cobra.Command {
	return &cobra.Command{
		Use: "rename CONTAINER NEW_NAME", Short: "Rename a container", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			_, err = api.ContainerRename(cmd.Context(), args[0], client.ContainerRenameOptions{NewName: args[1]})
			return err
		},
	}
}

func (c *cli) waitCmd() *cobra.Command {
	return &cobra.Command{
		Use: "wait CONTAINER...", Short: "Wait for containers to stop and print their exit codes", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			var failed bool
			for _, id := range args {
				w := api.ContainerWait(cmd.Context(), id, client.ContainerWaitOptions{})
				select {
				case res := <-w.Result:
					fmt.Fprintln(cmd.OutOrStdout(), res.StatusCode)
				case err := <-w.Error:
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					failed = true
				}
			}
			if failed {
				return statusError(1)
			}
			return nil
		},
	}
}

func (c *cli) logsCmd() *cobra.Command {
	var o client.ContainerLogsOptions
	cmd := &cobra.Command{
		Use: "logs [OPTIONS] CONTAINER", Short: "Show a container's output", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, res, err := c.inspectContainer(cmd, args[0])
			if err != nil {
				return err
			}
			o.ShowStdout, o.ShowStderr = true, true
			if o.Since != "" {
				if o.Since, err = sinceParam(o.Since); err != nil {
					return err
				}
			}
			rc, err := api.ContainerLogs(cmd.Context(), res.Container.ID, o)
			if err != nil {
				return err
			}
			defer rc.Close()
			if res.Container.Config.Tty {
				_, err = io.Copy(cmd.OutOrStdout(), rc)
			} else {
				_, err = stdcopy.StdCopy(cmd.OutOrStdout(), cmd.ErrOrStderr(), rc)
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&o.Follow, "follow", "f", false, "follow the output")
	cmd.Flags().StringVarP(&o.Tail, "tail", "n", "all", "lines from the end to show")
	cmd.Flags().BoolVarP(&o.Timestamps, "timestamps", "t", false, "show timestamps")
	cmd.Flags().StringVar(&o.Since, "since", "", "show lines since a time (RFC 3339) or a duration ago (10m)")
	return cmd
}

// sinceParam turns "10m" into a Unix time; a timestamp passes as it is.
func sinceParam(s string) (string, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return strconv.FormatInt(time.Now().Add(-d).Unix(), 10), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond()), nil
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return s, nil
	}
	return "", fmt.Errorf("--since %q: want a duration (10m), RFC 3339 time or Unix time", s)
}

// containerInspectCmd is `inspect`: containers, or images when no
// container has that name.
func (c *cli) containerInspectCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use: "inspect [OPTIONS] NAME|ID...", Short: "Show low-level information on containers or images", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			var out []json.RawMessage
			for _, ref := range args {
				res, err := api.ContainerInspect(cmd.Context(), ref, client.ContainerInspectOptions{})
				if err == nil {
					out = append(out, res.Raw)
					continue
				}
				if !errdefs.IsNotFound(err) {
					return err
				}
				img, ierr := api.ImageInspect(cmd.Context(), ref)
				if ierr != nil {
					return fmt.Errorf("no such object: %s", ref)
				}
				b, err := json.Marshal(img.InspectResponse)
				if err != nil {
					return err
				}
				out = append(out, b)
			}
			return printRaw(cmd.OutOrStdout(), out, format)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "Go template for each object")
	return cmd
}

// printRaw prints JSON objects as an indented array, or each through a
// Go template.
func printRaw(w io.Writer, objs []json.RawMessage, format string) error {
	if format == "" {
		b, err := json.MarshalIndent(objs, "", "    ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	tmpl, err := template.New("format").Funcs(templateFuncs).Parse(format)
	if err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	for _, raw := range objs {
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		if err := tmpl.Execute(w, v); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	return nil
}

// templateFuncs are the functions docker's --format offers most often.
var templateFuncs = template.FuncMap{
	"json": func(v any) string { b, _ := json.Marshal(v); return string(b) },
	"join": strings.Join, "upper": strings.ToUpper, "lower": strings.ToLower,
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
}

// printTable prints rows through a Go template (format, or def when
// empty), as docker's --format does: "table ..." aligns columns under a
// header made by the same template from header.
func printTable(out io.Writer, format, def string, header any, rows []any) error {
	if format == "" {
		format = def
	}
	table := strings.HasPrefix(format, "table")
	tmpl, err := template.New("format").Funcs(templateFuncs).Parse(strings.TrimSpace(strings.TrimPrefix(format, "table")))
	if err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	w := out
	var tw *tabwriter.Writer
	if table {
		tw = tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
		w = tw
		if err := tmpl.Execute(w, header); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	for _, r := range rows {
		if err := tmpl.Execute(w, r); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
		fmt.Fprintln(w)
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// psRow is what `ps --format` templates see, with docker's field names.
type psRow struct {
	ID, Image, Command, CreatedAt, RunningFor, Ports, State, Status, Names, Labels, Networks string
	// GPUs the container holds (berth's label, see daemon.GPUsLabel).
	GPUs string
}

func (c *cli) psCmd() *cobra.Command {
	var all, quiet, noTrunc, latest bool
	var filters []string
	var format string
	var last int
	cmd := &cobra.Command{
		Use: "ps [OPTIONS]", Short: "List containers", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			f := client.Filters{}
			for _, kv := range filters {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--filter %q: want KEY=VALUE", kv)
				}
				f = f.Add(k, v)
			}
			if latest {
				last = 1
			}
			res, err := api.ContainerList(cmd.Context(), client.ContainerListOptions{All: all || last > 0, Filters: f, Limit: last})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if quiet {
				for _, s := range res.Items {
					id := s.ID
					if !noTrunc {
						id = id[:12]
					}
					fmt.Fprintln(out, id)
				}
				return nil
			}
			header := psRow{ID: "CONTAINER ID", Image: "IMAGE", Command: "COMMAND", CreatedAt: "CREATED AT", RunningFor: "CREATED",
				Ports: "PORTS", State: "STATE", Status: "STATUS", Names: "NAMES", Labels: "LABELS", Networks: "NETWORKS", GPUs: "GPUS"}
			rows := make([]any, len(res.Items))
			table := "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
			gpus := false
			for i, s := range res.Items {
				r := newPSRow(s, noTrunc)
				gpus = gpus || r.GPUs != ""
				rows[i] = r
			}
			if gpus { // a column only where some container holds GPUs
				table += "\t{{.GPUs}}"
			}
			return printTable(out, format, table, header, rows)
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&all, "all", "a", false, "show all containers, not only running ones")
	fl.BoolVarP(&quiet, "quiet", "q", false, "only IDs")
	fl.BoolVar(&noTrunc, "no-trunc", false, "do not shorten IDs and commands")
	fl.StringArrayVarP(&filters, "filter", "f", nil, "filter: status=, name=, id=, label=, ancestor=, exited=")
	fl.StringVar(&format, "format", "", "Go template (table ... for a table)")
	fl.IntVarP(&last, "last", "n", 0, "the n last created containers")
	fl.BoolVarP(&latest, "latest", "l", false, "the latest created container")
	return cmd
}

func newPSRow(s container.Summary, noTrunc bool) psRow {
	r := psRow{ID: s.ID, Image: s.Image, Command: strconv.Quote(s.Command), State: string(s.State), Status: s.Status,
		CreatedAt:  time.Unix(s.Created, 0).Format("2006-01-02 15:04:05 -0700 MST"),
		RunningFor: units.HumanDuration(time.Since(time.Unix(s.Created, 0))) + " ago"}
	if !noTrunc {
		r.ID = r.ID[:12]
		if len(s.Command) > 20 {
			r.Command = strconv.Quote(s.Command[:19] + "…")
		}
	}
	var names, ports, labels []string
	for _, n := range s.Names {
		names = append(names, strings.TrimPrefix(n, "/"))
	}
	for _, p := range s.Ports {
		if p.PublicPort != 0 {
			ports = append(ports, fmt.Sprintf("%s:%d->%d/%s", p.IP, p.PublicPort, p.PrivatePort, p.Type))
		} else {
			ports = append(ports, fmt.Sprintf("%d/%s", p.PrivatePort, p.Type))
		}
	}
	for k, v := range s.Labels {
		labels = append(labels, k+"="+v)
	}
	r.Names, r.Ports, r.Labels = strings.Join(names, ","), strings.Join(ports, ", "), strings.Join(labels, ",")
	r.Networks = s.HostConfig.NetworkMode
	r.GPUs = s.Labels[gpusLabel]
	return r
}

func (c *cli) containerPruneCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "prune [OPTIONS]", Short: "Remove all stopped containers", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force && !confirm(cmd, "WARNING! This will remove all stopped containers.") {
				return nil
			}
			return c.pruneContainers(cmd)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	return cmd
}

func (c *cli) pruneContainers(cmd *cobra.Command) error {
	api, err := c.client()
	if err != nil {
		return err
	}
	res, err := api.ContainerPrune(cmd.Context(), client.ContainerPruneOptions{})
	if err != nil {
		return err
	}
	printPruned(cmd.OutOrStdout(), "Deleted Containers:", res.Report.ContainersDeleted, res.Report.SpaceReclaimed)
	return nil
}

// printPruned prints what a prune deleted, as docker does.
func printPruned(out io.Writer, title string, ids []string, reclaimed uint64) {
	if len(ids) > 0 {
		fmt.Fprintln(out, title)
		for _, id := range ids {
			fmt.Fprintln(out, id)
		}
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "Total reclaimed space: %s\n", units.HumanSize(float64(reclaimed)))
}

// confirm asks a yes/no question on the terminal.
func confirm(cmd *cobra.Command, warning string) bool {
	fmt.Fprintf(cmd.OutOrStdout(), "%s\nAre you sure you want to continue? [y/N] ", warning)
	var answer string
	_, _ = fmt.Fscanln(os.Stdin, &answer)
	return strings.EqualFold(answer, "y") || strings.EqualFold(answer, "yes")
}

// completeContainers offers container names to shell completion.
func (c *cli) completeContainers(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	api, err := c.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	res, err := api.ContainerList(cmd.Context(), client.ContainerListOptions{All: true})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, s := range res.Items {
		for _, n := range s.Names {
			names = append(names, strings.TrimPrefix(n, "/"))
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
