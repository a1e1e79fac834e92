package main

import (
	"archive/tar"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/spf13/cobra"

	"github.com/berth-containers/berth/pkg/credentials"
)

func (c *cli) buildCmd() *cobra.Command {
	var (
		tags, buildArgs, labels []string
		file, target, network   string
		noCache, quiet          bool
		memory, memorySwap      string
		shmSize                 string
		cpuShares               int64
		cpusetCpus              string
	)
	cmd := &cobra.Command{
		Use: "build [OPTIONS] PATH", Short: "Build an image from a Dockerfile", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, err := c.client()
			if err != nil {
				return err
			}
			opts := client.ImageBuildOptions{Tags: tags, Target: target, NoCache: noCache, SuppressOutput: quiet,
				NetworkMode: network, Remove: true, BuildArgs: map[string]*string{}, Labels: map[string]string{},
				CPUShares: cpuShares, CPUSetCPUs: cpusetCpus}
			for _, s := range []struct {
				flag, v string
				dst     *int64
			}{{"memory", memory, &opts.Memory}, {"memory-swap", memorySwap, &opts.MemorySwap}, {"shm-size", shmSize, &opts.ShmSize}} {
				if s.v == "" {
					continue
				}
				n, err := units.RAMInBytes(s.v)
				if err != nil {
					return fmt.Errorf("--%s=%s: %w", s.flag, s.v, err)
				}
				*s.dst = n
			}
			for _, a := range buildArgs {
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					// As docker: KEY alone takes the value from the environment.
					if ev, set := os.LookupEnv(k); set {
						v, ok = ev, true
					}
				}
				if ok {
					opts.BuildArgs[k] = &v
				} else {
					opts.BuildArgs[k] = nil
				}
			}
			for _, l := range labels {
				k, v, _ := strings.Cut(l, "=")
				opts.Labels[k] = v
			}
			if opts.AuthConfigs, err = credentials.All(credentials.ConfigDir()); err != nil {
				return err
			}
			ctxTar, dockerfile, err := contextTar(args[0], file)
			if err != nil {
				return err
			}
			defer ctxTar.Close()
			opts.Dockerfile = dockerfile
			res, err := api.ImageBuild(cmd.Context(), ctxTar, opts)
			if err != nil {
				return err
			}
			defer res.Body.Close()
			err = showProgress(res.Body, cmd.OutOrStdout())
			var jerr *jsonstream.Error
			if errors.As(err, &jerr) {
				// As docker: the message, and a failed RUN's exit code.
				fmt.Fprintln(cmd.ErrOrStderr(), jerr.Message)
				if jerr.Code == 0 {
					jerr.Code = 1
				}
				return statusError(jerr.Code)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&tags, "tag", "t", nil, "name and optionally a tag (name:tag); may be repeated")
	f.StringVarP(&file, "file", "f", "", "the Dockerfile (default PATH/Dockerfile)")
	f.StringArrayVar(&buildArgs, "build-arg", nil, "a build argument KEY=VALUE")
	f.StringArrayVar(&labels, "label", nil, "a label KEY=VALUE for the image")
	f.StringVar(&target, "target", "", "the stage to build")
	f.StringVar(&network, "network", "", "the network of RUN steps: default, none or host")
	f.BoolVar(&noCache, "no-cache", false, "do not use the build cache")
	f.StringVarP(&memory, "memory", "m", "", "memory limit of RUN steps (e.g. 512m)")
	f.StringVar(&memorySwap, "memory-swap", "", "memory plus swap limit of RUN steps")
	f.StringVar(&shmSize, "shm-size", "", "size of /dev/shm in RUN steps")
	f.Int64Var(&cpuShares, "cpu-shares", 0, "CPU shares of RUN steps")
	f.StringVar(&cpusetCpus, "cpuset-cpus", "", "CPUs RUN steps may use (0-3, 0,1)")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only the image ID")
	return cmd
}

// contextTar streams the build context dir as a tar, leaving out what its
// .dockerignore excludes (but never the Dockerfile or .dockerignore, as
// docker). A Dockerfile outside the context travels in it under a random
// name; the returned name is the Dockerfile's path inside the tar.
func contextTar(dir, dockerfile string) (io.ReadCloser, string, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, "", fmt.Errorf("unable to prepare context: %w", err)
	}
	if !fi.IsDir() {
		return nil, "", fmt.Errorf("unable to prepare context: %s is not a directory", dir)
	}
	var extra []byte
	name := "Dockerfile"
	if dockerfile != "" {
		abs, _ := filepath.Abs(dockerfile)
		absDir, _ := filepath.Abs(dir)
		rel, err := filepath.Rel(absDir, abs)
		if err == nil && !strings.HasPrefix(rel, "..") {
			name = filepath.ToSlash(rel)
		} else {
			if extra, err = os.ReadFile(dockerfile); err != nil {
				return nil, "", fmt.Errorf("unable to read the Dockerfile: %w", err)
			}
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			name = ".dockerfile." + hex.EncodeToString(b)
		}
	}
	var pm *patternmatcher.PatternMatcher
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, "", fmt.Errorf("read .dockerignore: %w", err)
		}
		if pm, err = patternmatcher.New(patterns); err != nil {
			return nil, "", fmt.Errorf(".dockerignore: %w", err)
		}
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := writeContext(tw, dir, pm, name)
		if err == nil && extra != nil {
			err = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(extra)), Typeflag: tar.TypeReg})
			if err == nil {
				_, err = tw.Write(extra)
			}
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, name, nil
}

func writeContext(tw *tar.Writer, dir string, pm *patternmatcher.PatternMatcher, dockerfile string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if pm != nil && rel != dockerfile && rel != ".dockerignore" {
			skip, err := pm.MatchesOrParentMatches(rel)
			if err != nil {
				return err
			}
			if skip {
				if d.IsDir() && !pm.Exclusions() {
					return filepath.SkipDir
				}
				if !d.IsDir() {
					return nil
				}
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return nil // sockets and the like: not part of a context
		}
		// As docker: the context's files belong to root in the daemon.
		hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = rel, 0, 0, "", ""
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyN(tw, f, fi.Size())
		return err
	})
}

func (c *cli) builderCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "builder", Short: "Manage builds"}
	var force, all bool
	prune := &cobra.Command{
		Use: "prune", Short: "Remove build cache", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force && !confirm(cmd, "WARNING! This will remove all dangling build cache.") {
				return nil
			}
			return c.pruneBuildCache(cmd, all)
		},
	}
	prune.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	prune.Flags().BoolVarP(&all, "all", "a", false, "remove all build cache (the same here: all of it is unreferenced)")
	cmd.AddCommand(prune)
	return cmd
}

func (c *cli) pruneBuildCache(cmd *cobra.Command, all bool) error {
	api, err := c.client()
	if err != nil {
		return err
	}
	res, err := api.BuildCachePrune(cmd.Context(), client.BuildCachePruneOptions{All: all})
	if err != nil {
		return err
	}
	printPruned(cmd.OutOrStdout(), "Deleted build cache objects:", res.Report.CachesDeleted, res.Report.SpaceReclaimed)
	return nil
}
