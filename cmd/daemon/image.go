package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/docker/go-units"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/term"

	"github.com/berth-containers/berth/internal/atomicfile"
	"github.com/berth-containers/berth/pkg/credentials"
	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/registry"
)

// imageCLI is `berthd image`: the image store from the command line, until
// the daemon's API serves it.
type imageCLI struct {
	root     string
	insecure []string
	db       *bolt.DB
	store    *image.Store
	reg      *registry.Client
}

func newImageCommand() *cobra.Command {
	c := &imageCLI{}
	cmd := &cobra.Command{
		Use:               "image",
		Short:             "Manage images: pull, push, import, load, save, list, remove",
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error { return c.open() },
		PersistentPostRun: func(*cobra.Command, []string) {
			// The store's flusher first: it writes to the database.
			if c.store != nil {
				if err := c.store.Close(); err != nil {
					fmt.Fprintln(os.Stderr, "berthd image: flush at exit:", err)
				}
			}
			if c.db != nil {
				c.db.Close()
			}
		},
	}
	f := cmd.PersistentFlags()
	f.StringVar(&c.root, "root", "/var/lib/berth", "berth's data directory")
	f.StringSliceVar(&c.insecure, "insecure-registry", nil, "registry (host:port) that may be reached over plain HTTP")
	cmd.AddCommand(c.pullCmd(), c.pushCmd(), c.importCmd(), c.loadCmd(), c.saveCmd(), c.lsCmd(),
		c.rmCmd(), c.tagCmd(), c.inspectCmd(), c.historyCmd(), c.pruneCmd())
	return cmd
}

func (c *imageCLI) open() error {
	var err error
	if c.db, err = image.OpenDB(c.root); err != nil {
		return err
	}
	if c.store, err = image.New(c.root, c.db); err != nil {
		return err
	}
	c.reg = registry.New(c.store)
	c.reg.Insecure = c.insecure
	return nil
}

// signalContext is cancelled by SIGINT or SIGTERM, so an interrupted
// pull stops cleanly and leaves no partial image.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// printProgress prints one line per layer event; "Downloading" only on a
// terminal, where it is redrawn in place.
func printProgress(w io.Writer) func(image.Progress) {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return func(p image.Progress) {
		if p.Status == "Downloading" {
			if tty {
				fmt.Fprintf(w, "\r%s: Downloading %s/%s\x1b[K", p.ID, units.HumanSize(float64(p.Current)), units.HumanSize(float64(p.Total)))
			}
			return
		}
		if tty {
			fmt.Fprint(w, "\r\x1b[K")
		}
		fmt.Fprintf(w, "%s: %s\n", p.ID, p.Status)
	}
}

func auth(ref string) (authn.Authenticator, error) {
	return credentials.Authenticator(credentials.ConfigDir(), ref)
}

func (c *imageCLI) pullCmd() *cobra.Command {
	return &cobra.Command{
		Use: "pull NAME[:TAG|@DIGEST]", Short: "Pull an image from a registry", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			a, err := auth(args[0])
			if err != nil {
				return err
			}
			img, err := c.reg.Pull(ctx, args[0], a, printProgress(cmd.OutOrStdout()))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Digest: %s\nStatus: pulled %s\n", img.Manifest, args[0])
			return nil
		},
	}
}

func (c *imageCLI) pushCmd() *cobra.Command {
	return &cobra.Command{
		Use: "push NAME[:TAG] [TARGET]", Short: "Push an image (to TARGET, default NAME)", Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			target := args[len(args)-1]
			a, err := auth(target)
			if err != nil {
				return err
			}
			d, err := c.reg.Push(ctx, args[0], target, a, printProgress(cmd.OutOrStdout()))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: digest: %s\n", target, d)
			return nil
		},
	}
}

func (c *imageCLI) importCmd() *cobra.Command {
	return &cobra.Command{
		Use: "import FILE NAME[:TAG]", Short: "Make an image from a root filesystem tarball", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			img, err := c.store.Import(ctx, args[0], image.ImportOptions{Names: []string{args[1]}})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), img.ID)
			return nil
		},
	}
}

func (c *imageCLI) loadCmd() *cobra.Command {
	var input string
	cmd := &cobra.Command{
		Use: "load -i FILE|DIR", Short: "Load images from a docker save archive or an OCI layout", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext()
			defer cancel()
			imgs, err := c.store.Load(ctx, input, nil)
			for _, img := range imgs {
				if len(img.Names) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "Loaded image ID: %s\n", img.ID)
				}
				for _, n := range img.Names {
					fmt.Fprintf(cmd.OutOrStdout(), "Loaded image: %s\n", image.FamiliarName(n))
				}
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "archive or layout directory to read")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

func (c *imageCLI) saveCmd() *cobra.Command {
	var output, format string
	cmd := &cobra.Command{
		Use: "save -o FILE IMAGE...", Short: "Save images as a docker save archive or an OCI layout", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch format {
			case "oci":
				return c.store.SaveLayout(output, args)
			case "docker":
			default:
				return fmt.Errorf("--format %q: use docker or oci", format)
			}
			return atomicfile.Write(output, func(w io.Writer) error { return c.store.Save(w, args) })
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "file (docker) or directory (oci) to write")
	cmd.Flags().StringVar(&format, "format", "docker", "docker (a docker save tarball) or oci (an OCI image layout directory)")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

// repoTag splits a stored name for display: busybox, latest.
func repoTag(n string) (string, string) {
	f := image.FamiliarName(n)
	if i := strings.LastIndex(f, "@"); i >= 0 {
		return f[:i], "<none>"
	}
	if i := strings.LastIndex(f, ":"); i > strings.LastIndex(f, "/") {
		return f[:i], f[i+1:]
	}
	return f, "<none>"
}

func (c *imageCLI) lsCmd() *cobra.Command {
	var dangling, quiet bool
	cmd := &cobra.Command{
		Use: "ls", Aliases: []string{"list", "images"}, Short: "List images", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			imgs, err := c.store.List()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			if !quiet {
				fmt.Fprintln(w, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tSHARED SIZE\tUNIQUE SIZE")
			}
			for _, img := range imgs {
				if dangling && len(img.Names) > 0 {
					continue
				}
				if quiet {
					fmt.Fprintln(w, img.ID.Encoded()[:12])
					continue
				}
				created := "N/A"
				if cfg, err := c.store.Config(img); err == nil && !cfg.Created.IsZero() {
					created = units.HumanDuration(time.Since(cfg.Created.Time)) + " ago"
				}
				u := c.store.Usage(img)
				names := img.Names
				if len(names) == 0 {
					names = []string{""}
				}
				for _, n := range names {
					repo, tag := "<none>", "<none>"
					if n != "" {
						repo, tag = repoTag(n)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", repo, tag, img.ID.Encoded()[:12], created,
						units.HumanSize(float64(u.Size)), units.HumanSize(float64(u.Shared)), units.HumanSize(float64(u.Size-u.Shared)))
				}
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&dangling, "dangling", false, "only images without a name")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only image IDs")
	return cmd
}

func (c *imageCLI) rmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "rm IMAGE...", Aliases: []string{"rmi", "remove"}, Short: "Remove images", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, ref := range args {
				res, err := c.store.Remove(ref, image.RemoveOptions{Force: force})
				if err != nil {
					errs = append(errs, err)
					continue
				}
				for _, n := range res.Untagged {
					fmt.Fprintf(cmd.OutOrStdout(), "Untagged: %s\n", image.FamiliarName(n))
				}
				for _, d := range res.Deleted {
					fmt.Fprintf(cmd.OutOrStdout(), "Deleted: %s\n", d)
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove even if several names or a container use it")
	return cmd
}

func (c *imageCLI) tagCmd() *cobra.Command {
	return &cobra.Command{
		Use: "tag SOURCE TARGET", Short: "Give an image another name", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error { return c.store.Tag(args[0], args[1]) },
	}
}

// inspectInfo is a subset of `docker image inspect`'s output.
type inspectInfo struct {
	ID           string   `json:"Id"`
	RepoTags     []string `json:"RepoTags"`
	RepoDigests  []string `json:"RepoDigests"`
	Created      string   `json:"Created,omitempty"`
	Architecture string   `json:"Architecture"`
	Os           string   `json:"Os"`
	Size         int64    `json:"Size"`
	Config       any      `json:"Config"`
	RootFS       any      `json:"RootFS"`
	Manifest     string   `json:"Manifest"`
	MediaType    string   `json:"MediaType"`
}

func (c *imageCLI) inspectCmd() *cobra.Command {
	return &cobra.Command{
		Use: "inspect IMAGE...", Short: "Show images' details as JSON", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out []inspectInfo
			for _, ref := range args {
				img, err := c.store.Get(ref)
				if err != nil {
					return err
				}
				cfg, err := c.store.Config(img)
				if err != nil {
					return err
				}
				info := inspectInfo{ID: img.ID.String(), RepoTags: []string{}, RepoDigests: []string{},
					Architecture: cfg.Architecture, Os: cfg.OS, Size: c.store.Usage(img).Size,
					Config: cfg.Config, RootFS: cfg.RootFS, Manifest: img.Manifest.String(), MediaType: img.MediaType}
				if !cfg.Created.IsZero() {
					info.Created = cfg.Created.Format(time.RFC3339Nano)
				}
				for _, n := range img.Names {
					if strings.Contains(n, "@") {
						info.RepoDigests = append(info.RepoDigests, image.FamiliarName(n))
					} else {
						info.RepoTags = append(info.RepoTags, image.FamiliarName(n))
					}
				}
				out = append(out, info)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "    ")
			return enc.Encode(out)
		},
	}
}

func (c *imageCLI) historyCmd() *cobra.Command {
	return &cobra.Command{
		Use: "history IMAGE", Short: "Show how an image was made", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			img, err := c.store.Get(args[0])
			if err != nil {
				return err
			}
			cfg, err := c.store.Config(img)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "CREATED\tCREATED BY\tSIZE\tCOMMENT")
			layer := len(img.Layers) - 1
			for i := len(cfg.History) - 1; i >= 0; i-- {
				h := cfg.History[i]
				size := "0B"
				if !h.EmptyLayer && layer >= 0 {
					size = units.HumanSize(float64(c.store.LayerSize(img.Layers[layer].ChainID)))
					layer--
				}
				created := "N/A"
				if !h.Created.IsZero() {
					created = units.HumanDuration(time.Since(h.Created.Time)) + " ago"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", created, h.CreatedBy, size, h.Comment)
			}
			return w.Flush()
		},
	}
}

func (c *imageCLI) pruneCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use: "prune", Short: "Remove dangling images (with -a, every image)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			deleted, err := c.store.Prune(all, nil)
			for _, d := range deleted {
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted: %s\n", d)
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "remove every image, not only dangling ones")
	return cmd
}
