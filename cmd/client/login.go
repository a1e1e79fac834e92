package main

import (
	"errors"
	"fmt"

	"github.com/moby/moby/client"
	"github.com/spf13/cobra"

	"github.com/berth-containers/berth/pkg/credentials"
)

// loginCmd checks a login through berthd (POST /auth), then stores it as
// the Docker CLI does: never in berthd, always with the client.
func (c *cli) loginCmd() *cobra.Command {
	var user string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use: "login [SERVER] -u USER --password-stdin", Short: "Log in to a registry", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if user == "" || !passwordStdin {
				return errors.New("give -u USER and the password on standard input with --password-stdin")
			}
			server := "docker.io"
			if len(args) == 1 {
				server = args[0]
			}
			key, err := credentials.ServerKey(server)
			if err != nil {
				return err
			}
			pw, err := credentials.ReadPassword(cmd.InOrStdin())
			if err != nil {
				return err
			}
			api, err := c.client()
			if err != nil {
				return err
			}
			if _, err := api.RegistryLogin(cmd.Context(), client.RegistryLoginOptions{Username: user, Password: pw, ServerAddress: key}); err != nil {
				return err
			}
			if err := credentials.SaveLogin(credentials.ConfigDir(), server, user, pw); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Login Succeeded")
			return nil
		},
	}
	cmd.Flags().StringVarP(&user, "username", "u", "", "user name")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	return cmd
}

func (c *cli) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use: "logout [SERVER]", Short: "Forget a registry login", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			server := "docker.io"
			if len(args) == 1 {
				server = args[0]
			}
			if err := credentials.RemoveLogin(credentials.ConfigDir(), server); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Removing login credentials for", server)
			return nil
		},
	}
}
