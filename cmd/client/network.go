package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

func (c *cli) networkCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Manage networks"}
	var subnet, format string
	var labels []string
	create := &cobra.Command{
		Use: "create [--subnet CIDR] NAME", Short: "Create a bridge network", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			opts := client.NetworkCreateOptions{Driver: "bridge", Labels: map[string]string{}}
			for _, l := range labels {
				k, v, _ := strings.Cut(l, "=")
				opts.Labels[k] = v
			}
			if subnet != "" {
				p, err := netip.ParsePrefix(subnet)
				if err != nil {
					return fmt.Errorf("--subnet %s: %w", subnet, err)
				}
				opts.IPAM = &network.IPAM{Config: []network.IPAMConfig{{Subnet: p}}}
			}
			res, err := api.NetworkCreate(cmd.Context(), args[0], opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.ID)
			return nil
		},
	}
	create.Flags().StringVar(&subnet, "subnet", "", "subnet of the network (default: a free /24 of 10.90.0.0/16)")
	create.Flags().StringArrayVar(&labels, "label", nil, "a label KEY=VALUE")
	ls := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List networks", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			res, err := api.NetworkList(cmd.Context(), client.NetworkListOptions{})
			if err != nil {
				return err
			}
			var rows []any
			for _, n := range res.Items {
				id := n.ID
				if len(id) > 12 {
					id = id[:12]
				}
				rows = append(rows, networkRow{ID: id, Name: n.Name, Driver: n.Driver, Scope: n.Scope})
			}
			header := networkRow{ID: "NETWORK ID", Name: "NAME", Driver: "DRIVER", Scope: "SCOPE"}
			return printTable(cmd.OutOrStdout(), format, "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}", header, rows)
		},
	}
	ls.Flags().StringVar(&format, "format", "", "Go template (table ... for a table)")
	rm := &cobra.Command{
		Use: "rm NETWORK...", Aliases: []string{"remove"}, Short: "Remove networks", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			for _, n := range args {
				if _, err := api.NetworkRemove(cmd.Context(), n, client.NetworkRemoveOptions{}); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), n)
			}
			return nil
		},
	}
	var inspectFormat string
	inspect := &cobra.Command{
		Use: "inspect NETWORK...", Short: "Show a network's details", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			var out []json.RawMessage
			for _, n := range args {
				res, err := api.NetworkInspect(cmd.Context(), n, client.NetworkInspectOptions{})
				if err != nil {
					return err
				}
				out = append(out, res.Raw)
			}
			return printRaw(cmd.OutOrStdout(), out, inspectFormat)
		},
	}
	inspect.Flags().StringVarP(&inspectFormat, "format", "f", "", "Go template")
	connect := &cobra.Command{
		Use: "connect NETWORK CONTAINER", Short: "Connect a container to a network", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			_, err = api.NetworkConnect(cmd.Context(), args[0], client.NetworkConnectOptions{Container: args[1]})
			return err
		},
	}
	disconnect := &cobra.Command{
		Use: "disconnect NETWORK CONTAINER", Short: "Disconnect a container from a network", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			_, err = api.NetworkDisconnect(cmd.Context(), args[0], client.NetworkDisconnectOptions{Container: args[1]})
			return err
		},
	}
	var force bool
	prune := &cobra.Command{
		Use: "prune", Short: "Remove the networks no container uses", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force && !confirm(cmd, "WARNING! This will remove all custom networks not used by at least one container.") {
				return nil
			}
			return c.pruneNetworks(cmd)
		},
	}
	prune.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	cmd.AddCommand(create, ls, rm, inspect, connect, disconnect, prune)
	return cmd
}

func (c *cli) pruneNetworks(cmd *cobra.Command) error {
	api, err := c.client()
	if err != nil {
		return err
	}
	res, err := api.NetworkPrune(cmd.Context(), client.NetworkPruneOptions{})
	if err != nil {
		return err
	}
	if len(res.Report.NetworksDeleted) > 0 {
		fmt.Fprintln(cmd.OutOrStdout(), "Deleted Networks:")
		for _, n := range res.Report.NetworksDeleted {
			fmt.Fprintln(cmd.OutOrStdout(), n)
		}
	}
	return nil
}

// networkRow is what `network ls --format` templates see.
type networkRow struct{ ID, Name, Driver, Scope string }

// portCmd is `berth port CONTAINER [PORT[/PROTO]]`: the published ports,
// as docker prints them.
func (c *cli) portCmd() *cobra.Command {
	return &cobra.Command{
		Use: "port CONTAINER [PRIVATE_PORT[/PROTO]]", Short: "List a container's published ports", Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, res, err := c.inspectContainer(cmd, args[0])
			if err != nil {
				return err
			}
			if res.Container.NetworkSettings == nil {
				return nil
			}
			var want network.Port
			if len(args) == 2 {
				if want, err = network.ParsePort(args[1]); err != nil {
					return err
				}
			}
			var lines []string
			for port, bindings := range res.Container.NetworkSettings.Ports {
				if len(args) == 2 && port != want {
					continue
				}
				for _, b := range bindings {
					host := b.HostIP.String() + ":" + b.HostPort
					if len(args) == 2 {
						lines = append(lines, host)
					} else {
						lines = append(lines, port.String()+" -> "+host)
					}
				}
			}
			if len(args) == 2 && len(lines) == 0 {
				return fmt.Errorf("no public port '%s' published for %s", args[1], args[0])
			}
			slices.Sort(lines)
			for _, l := range lines {
				fmt.Fprintln(cmd.OutOrStdout(), l)
			}
			return nil
		},
	}
}
