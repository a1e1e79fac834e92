package main

import (
	"fmt"
	"runtime"

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
			return nil
		},
	}
}
