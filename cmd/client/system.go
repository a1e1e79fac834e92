package main

import (
	"fmt"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/system"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/berth-containers/berth/internal/version"
)

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use: "version", Short: "Show the client and daemon versions", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Client:\n Version:    %s\n OS/Arch:    linux/%s\n", version.Version, runtime.GOARCH)
			api, err := c.client()
			if err != nil {
				return err
			}
			v, err := api.ServerVersion(cmd.Context(), client.ServerVersionOptions{})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "\nServer: %s\n Version:    %s\n API:        %s (minimum %s)\n OS/Arch:    %s/%s\n",
				v.Platform.Name, v.Version, v.APIVersion, v.MinAPIVersion, v.Os, v.Arch)
			return nil
		},
	}
}

func (c *cli) infoCmd() *cobra.Command {
	return &cobra.Command{
		Use: "info", Short: "Show the daemon's system information", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			res, err := api.Info(cmd.Context(), client.InfoOptions{})
			if err != nil {
				return err
			}
			i := res.Info
			fmt.Fprintf(cmd.OutOrStdout(), "Server:\n Containers: %d\n Images: %d\n Server Version: %s\n Storage Driver: %s\n Cgroup Driver: %s\n Kernel Version: %s\n Operating System: %s\n Architecture: %s\n CPUs: %d\n Total Memory: %d\n Name: %s\n Root Dir: %s\n",
				i.Containers, i.Images, i.ServerVersion, i.Driver, i.CgroupDriver, i.KernelVersion, i.OperatingSystem, i.Architecture, i.NCPU, i.MemTotal, i.Name, i.DockerRootDir)
			return c.printDevices(cmd, api, i.CDISpecDirs, i.DiscoveredDevices)
		},
	}
}

func (c *cli) systemCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "system", Short: "Manage berth"}
	df := &cobra.Command{
		Use: "df", Short: "Show disk usage", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			du, err := api.DiskUsage(cmd.Context(), client.DiskUsageOptions{Containers: true, Images: true, BuildCache: true})
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE")
			for _, row := range []struct {
				name                         string
				total, active, size, reclaim int64
			}{
				{"Images", du.Images.TotalCount, du.Images.ActiveCount, du.Images.TotalSize, du.Images.Reclaimable},
				{"Containers", du.Containers.TotalCount, du.Containers.ActiveCount, du.Containers.TotalSize, du.Containers.Reclaimable},
				{"Build Cache", du.BuildCache.TotalCount, du.BuildCache.ActiveCount, du.BuildCache.TotalSize, du.BuildCache.Reclaimable},
			} {
				fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\n", row.name, row.total, row.active,
					units.HumanSize(float64(row.size)), units.HumanSize(float64(row.reclaim)))
			}
			return w.Flush()
		},
	}
	var force, all bool
	prune := &cobra.Command{
		Use: "prune", Short: "Remove stopped containers and unused images", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			what := "dangling images"
			if all {
				what = "images without at least one container"
			}
			if !force && !confirm(cmd, "WARNING! This will remove all stopped containers, all networks not used by at least one container, all "+what+" and all build cache.") {
				return nil
			}
			if err := c.pruneContainers(cmd); err != nil {
				return err
			}
			if err := c.pruneNetworks(cmd); err != nil {
				return err
			}
			if err := c.pruneImages(cmd, all); err != nil {
				return err
			}
			return c.pruneBuildCache(cmd, all)
		},
	}
	prune.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	prune.Flags().BoolVarP(&all, "all", "a", false, "remove all unused images, not only dangling ones")
	cmd.AddCommand(df, prune, c.infoCmd())
	return cmd
}

// gpusLabel is berthd's label on a container holding GPUs or CDI devices.
const gpusLabel = "berth.gpus"

// printDevices lists the GPUs and CDI devices berthd found, each with the
// containers holding it (running or created), as berthd's label says.
func (c *cli) printDevices(cmd *cobra.Command, api *client.Client, dirs []string, devs []system.DeviceInfo) error {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, " CDI Spec Directories: %s\n", strings.Join(dirs, ", "))
	if len(devs) == 0 {
		fmt.Fprintln(out, " Devices: none")
		return nil
	}
	res, err := api.ContainerList(cmd.Context(), client.ContainerListOptions{All: true,
		Filters: client.Filters{}.Add("label", gpusLabel)})
	if err != nil {
		return err
	}
	holders := map[string][]string{}
	for _, s := range res.Items {
		if s.State != container.StateRunning && s.State != container.StateCreated {
			continue
		}
		for _, id := range strings.Split(s.Labels[gpusLabel], ",") {
			holders[id] = append(holders[id], strings.TrimPrefix(s.Names[0], "/"))
		}
	}
	fmt.Fprintln(out, " Devices:")
	for _, d := range devs {
		h := "free"
		if names := holders[d.ID]; len(names) > 0 {
			h = "held by " + strings.Join(names, ", ")
		}
		fmt.Fprintf(out, "  %s (%s): %s\n", d.ID, d.Source, h)
	}
	return nil
}
