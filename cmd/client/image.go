package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/docker/go-units"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/jsonmessage"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/berth-containers/berth/internal/atomicfile"
	"github.com/berth-containers/berth/pkg/credentials"
)

// imageCmd is `berth image ...`; imageCommands are docker's top-level
// spellings of the same commands (images, pull, push, rmi, tag, ...).
func (c *cli) imageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage images"}
	ls := c.imagesCmd()
	ls.Use, ls.Aliases = "ls", []string{"list"}
	rm := c.rmiCmd()
	rm.Use, rm.Aliases = "rm IMAGE...", []string{"remove"}
	cmd.AddCommand(ls, rm, c.buildCmd(), c.pullCmd(), c.pushCmd(), c.tagCmd(), c.pruneCmd(), c.inspectCmd(),
		c.historyCmd(), c.loadCmd(), c.saveCmd(), c.importCmd())
	return cmd
}

func (c *cli) imageCommands() []*cobra.Command {
	return []*cobra.Command{c.imagesCmd(), c.rmiCmd(), c.pullCmd(), c.pushCmd(), c.tagCmd(),
		c.loadCmd(), c.saveCmd(), c.importCmd(), c.historyCmd()}
}

// showProgress renders a progress stream as docker does: bars on a
// terminal, plain lines otherwise. An error in the stream is returned.
func showProgress(r io.Reader, out io.Writer) error {
	fd, tty := uintptr(0), false
	if f, ok := out.(*os.File); ok {
		fd, tty = f.Fd(), term.IsTerminal(int(f.Fd()))
	}
	return jsonmessage.DisplayJSONMessagesStream(r, out, fd, tty, nil)
}

// withAuth calls a registry operation with the stored login for ref.
func (c *cli) withAuth(ref string, call func(api *client.Client, auth string) (io.ReadCloser, error)) (io.ReadCloser, error) {
	api, err := c.client()
	if err != nil {
		return nil, err
	}
	auth, err := credentials.Header(credentials.ConfigDir(), ref)
	if err != nil {
		return nil, err
	}
	return call(api, auth)
}

func (c *cli) pullCmd() *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use: "pull NAME[:TAG|@DIGEST]", Short: "Download an image from a registry", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := c.withAuth(args[0], func(api *client.Client, auth string) (io.ReadCloser, error) {
				return api.ImagePull(cmd.Context(), args[0], client.ImagePullOptions{RegistryAuth: auth})
			})
			if err != nil {
				return err
			}
			defer resp.Close()
			out := cmd.OutOrStdout()
			if quiet {
				out = io.Discard
			}
			if err := showProgress(resp, out); err != nil {
				return err
			}
			if quiet {
				fmt.Fprintln(cmd.OutOrStdout(), args[0])
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the image name")
	return cmd
}

func (c *cli) pushCmd() *cobra.Command {
	return &cobra.Command{
		Use: "push NAME[:TAG]", Short: "Upload an image to a registry", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			resp, err := c.withAuth(args[0], func(api *client.Client, auth string) (io.ReadCloser, error) {
				return api.ImagePush(cmd.Context(), args[0], client.ImagePushOptions{RegistryAuth: auth})
			})
			if err != nil {
				return err
			}
			defer resp.Close()
			return showProgress(resp, cmd.OutOrStdout())
		},
	}
}

// imageRow is what `images --format` templates see, with docker's names.
type imageRow struct {
	ID, Repository, Tag, Digest, CreatedSince, CreatedAt, Size string
}

func (c *cli) imagesCmd() *cobra.Command {
	var quiet, dangling, all bool
	var filters []string
	var format string
	cmd := &cobra.Command{
		Use: "images [REPOSITORY[:TAG]]", Short: "List images", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			f := client.Filters{}
			if dangling {
				f = f.Add("dangling", "true")
			}
			if len(args) == 1 {
				f = f.Add("reference", args[0])
			}
			for _, kv := range filters {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--filter %q: want KEY=VALUE", kv)
				}
				f = f.Add(k, v)
			}
			res, err := api.ImageList(cmd.Context(), client.ImageListOptions{All: all, Filters: f})
			if err != nil {
				return err
			}
			var rows []any
			for _, img := range res.Items {
				id := strings.TrimPrefix(img.ID, "sha256:")[:12]
				if quiet {
					fmt.Fprintln(cmd.OutOrStdout(), id)
					continue
				}
				tags := img.RepoTags
				if len(tags) == 0 {
					tags = []string{"<none>:<none>"}
				}
				digest := "<none>"
				if len(img.RepoDigests) > 0 {
					_, digest, _ = strings.Cut(img.RepoDigests[0], "@")
				}
				for _, t := range tags {
					repo, tag := t, "<none>"
					if i := strings.LastIndex(t, ":"); i > strings.LastIndex(t, "/") {
						repo, tag = t[:i], t[i+1:]
					}
					rows = append(rows, imageRow{ID: id, Repository: repo, Tag: tag, Digest: digest, CreatedSince: ago(img.Created),
						CreatedAt: time.Unix(img.Created, 0).Format("2006-01-02 15:04:05 -0700 MST"),
						Size:      units.HumanSizeWithPrecision(float64(img.Size), 3)})
				}
			}
			if quiet {
				return nil
			}
			header := imageRow{ID: "IMAGE ID", Repository: "REPOSITORY", Tag: "TAG", Digest: "DIGEST", CreatedSince: "CREATED",
				CreatedAt: "CREATED AT", Size: "SIZE"}
			return printTable(cmd.OutOrStdout(), format, "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}", header, rows)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only image IDs")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "also the images of build steps (the build cache)")
	cmd.Flags().BoolVar(&dangling, "dangling", false, "only images without a name")
	cmd.Flags().StringArrayVarP(&filters, "filter", "f", nil, "filter: dangling=true, reference=PATTERN, label=KEY[=VALUE]")
	cmd.Flags().StringVar(&format, "format", "", "Go template (table ... for a table)")
	return cmd
}

func ago(unix int64) string {
	if unix <= 0 {
		return "N/A"
	}
	return units.HumanDuration(time.Since(time.Unix(unix, 0))) + " ago"
}

func (c *cli) rmiCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "rmi IMAGE...", Short: "Remove images", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			failed := false
			for _, ref := range args {
				res, err := api.ImageRemove(cmd.Context(), ref, client.ImageRemoveOptions{Force: force})
				if err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					failed = true
					continue
				}
				for _, d := range res.Items {
					if d.Untagged != "" {
						fmt.Fprintln(cmd.OutOrStdout(), "Untagged:", d.Untagged)
					}
					if d.Deleted != "" {
						fmt.Fprintln(cmd.OutOrStdout(), "Deleted:", d.Deleted)
					}
				}
			}
			if failed {
				return statusError(1)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if several names or a container use it")
	return cmd
}

func (c *cli) tagCmd() *cobra.Command {
	return &cobra.Command{
		Use: "tag SOURCE TARGET", Short: "Give an image another name", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			_, err = api.ImageTag(cmd.Context(), client.ImageTagOptions{Source: args[0], Target: args[1]})
			return err
		},
	}
}

func (c *cli) pruneCmd() *cobra.Command {
	var all, yes bool
	cmd := &cobra.Command{
		Use: "prune", Short: "Remove unused images", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !yes && !confirm(cmd, "WARNING! This will remove unused images.") {
				return nil
			}
			return c.pruneImages(cmd, all)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "remove all unused images, not only dangling ones")
	cmd.Flags().BoolVarP(&yes, "force", "f", false, "do not ask for confirmation")
	return cmd
}

func (c *cli) pruneImages(cmd *cobra.Command, all bool) error {
	api, err := c.client()
	if err != nil {
		return err
	}
	opts := client.ImagePruneOptions{}
	if all {
		opts.Filters = make(client.Filters).Add("dangling", "false")
	}
	res, err := api.ImagePrune(cmd.Context(), opts)
	if err != nil {
		return err
	}
	for _, d := range res.Report.ImagesDeleted {
		fmt.Fprintln(cmd.OutOrStdout(), "deleted:", d.Deleted)
	}
	fmt.Fprintln(cmd.OutOrStdout(), "Total reclaimed space:", units.HumanSize(float64(res.Report.SpaceReclaimed)))
	return nil
}

func (c *cli) inspectCmd() *cobra.Command {
	return &cobra.Command{
		Use: "inspect IMAGE...", Short: "Show images' details as JSON", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			var out []any
			for _, ref := range args {
				res, err := api.ImageInspect(cmd.Context(), ref)
				if err != nil {
					return err
				}
				out = append(out, res.InspectResponse)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "    ")
			return enc.Encode(out)
		},
	}
}

func (c *cli) historyCmd() *cobra.Command {
	return &cobra.Command{
		Use: "history IMAGE", Short: "Show how an image was made", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			res, err := api.ImageHistory(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "IMAGE\tCREATED\tCREATED BY\tSIZE\tCOMMENT")
			for _, h := range res.Items {
				id := h.ID
				if strings.HasPrefix(id, "sha256:") {
					id = strings.TrimPrefix(id, "sha256:")[:12]
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", id, ago(h.Created), h.CreatedBy, units.HumanSizeWithPrecision(float64(h.Size), 3), h.Comment)
			}
			return w.Flush()
		},
	}
}

func (c *cli) loadCmd() *cobra.Command {
	var input string
	cmd := &cobra.Command{
		Use: "load [-i FILE]", Short: "Load images from a docker save archive (or standard input)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			in := cmd.InOrStdin()
			if input != "" {
				f, err := os.Open(input)
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			resp, err := api.ImageLoad(cmd.Context(), in)
			if err != nil {
				return err
			}
			defer resp.Close()
			return showProgress(resp, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "archive to read instead of standard input")
	return cmd
}

func (c *cli) saveCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use: "save [-o FILE] IMAGE...", Short: "Save images as a docker save archive", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "" && term.IsTerminal(int(os.Stdout.Fd())) {
				return fmt.Errorf("refusing to write an archive to a terminal: use -o FILE or redirect")
			}
			api, err := c.client()
			if err != nil {
				return err
			}
			resp, err := api.ImageSave(cmd.Context(), args)
			if err != nil {
				return err
			}
			defer resp.Close()
			if output == "" {
				_, err = io.Copy(cmd.OutOrStdout(), resp)
				return err
			}
			return atomicfile.Write(output, func(w io.Writer) error {
				_, err := io.Copy(w, resp)
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write instead of standard output")
	return cmd
}

func (c *cli) importCmd() *cobra.Command {
	var message string
	cmd := &cobra.Command{
		Use: "import FILE|- [REPOSITORY[:TAG]]", Short: "Make an image from a root filesystem tarball", Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			in := cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			ref := ""
			if len(args) == 2 {
				ref = args[1]
			}
			resp, err := api.ImageImport(cmd.Context(), client.ImageImportSource{Source: in, SourceName: "-"}, ref, client.ImageImportOptions{Message: message})
			if err != nil {
				return err
			}
			defer resp.Close()
			var m struct {
				Status string `json:"status"`
			}
			if err := json.NewDecoder(resp).Decode(&m); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), m.Status)
			return nil
		},
	}
	cmd.Flags().StringVarP(&message, "message", "m", "", "commit message for the imported image")
	return cmd
}
