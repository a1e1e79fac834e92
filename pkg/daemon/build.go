package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/build"
	"github.com/berth-containers/berth/pkg/image/snapshot"
	"github.com/berth-containers/berth/pkg/network"
	"github.com/berth-containers/berth/pkg/runtime"
)

// builds runs the containers of RUN steps. They are the daemon's own
// children, not shim-run containers: a build lives as long as its
// request, and a daemon that dies takes its builds' state with it
// (cleaned up at the next start).
type builds struct {
	d    *Daemon
	rt   *runtime.Runtime
	root string // root/builds: contexts, snapshots and bundles
}

func newBuilds(d *Daemon) (*builds, error) {
	root := filepath.Join(d.cfg.Root, "builds")
	rt, err := runtime.New(filepath.Join(root, "runtime"))
	if err != nil {
		return nil, err
	}
	b := &builds{d: d, rt: rt, root: root}
	b.cleanup()
	return b, nil
}

// cleanup removes what builds cut short by a daemon's death left: their
// containers (killed), snapshot mounts and directories.
func (b *builds) cleanup() {
	ids, _ := b.rt.List()
	for _, id := range ids {
		if c, err := b.rt.Load(id); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := c.Delete(ctx, true); err != nil {
				slog.Warn("remove a dead build's container", "id", id, "err", err)
			}
			cancel()
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(b.root, "build-*"))
	for _, dir := range dirs {
		steps, _ := filepath.Glob(filepath.Join(dir, "*", "rootfs"))
		for _, rootfs := range steps {
			if err := snapshot.Remove(b.d.snapshot, filepath.Dir(rootfs)); err != nil {
				slog.Warn("remove a dead build's snapshot", "dir", filepath.Dir(rootfs), "err", err)
			}
		}
		os.RemoveAll(dir)
	}
	bundles, _ := filepath.Glob(filepath.Join(b.root, "bundles", "*"))
	for _, p := range bundles {
		os.RemoveAll(p)
	}
}

// Run runs one RUN step's process in a container of the daemon's
// defaults (capabilities, seccomp, ulimits), under the cgroup parent.
func (b *builds) Run(ctx context.Context, st build.RunStep) (int, error) {
	id := "build-" + st.ID[:20]
	l := st.Limits
	hc := &container.HostConfig{NetworkMode: container.NetworkMode(st.Network), ShmSize: l.ShmSize,
		Resources: container.Resources{Memory: l.Memory, MemorySwap: l.MemorySwap, CPUShares: l.CPUShares,
			CPUQuota: l.CPUQuota, CPUPeriod: l.CPUPeriod, CpusetCpus: l.CpusetCpus, CpusetMems: l.CpusetMems}}
	for _, name := range slices.Sorted(maps.Keys(b.d.cfg.DefaultUlimits)) {
		hc.Ulimits = append(hc.Ulimits, b.d.cfg.DefaultUlimits[name])
	}
	rc := image.RunConfig{Args: st.Args, Env: st.Env, Cwd: st.Cwd, User: st.User}
	spec, err := ContainerSpec(st.Rootfs, rc, &container.Config{Hostname: st.ID[:12]}, hc)
	if err != nil {
		return -1, err
	}
	spec.Linux.CgroupsPath = path.Join("/", b.d.cfg.CgroupParent, id)
	bundle := filepath.Join(b.root, "bundles", id)
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return -1, err
	}
	defer os.RemoveAll(bundle)
	if st.Network == "" {
		// As Docker's classic builder: RUN on the default bridge, with
		// the /etc files a container gets (the builder drops the empty
		// mount points this leaves in a layer).
		ep, err := b.d.net.Attach(st.ID, network.DefaultNetwork, nil)
		if err != nil {
			return -1, fmt.Errorf("attach the RUN step to the bridge: %w", err)
		}
		defer func() {
			if err := b.d.net.Detach(st.ID); err != nil {
				slog.Warn("detach a RUN step from the bridge", "err", err)
			}
		}()
		joinNetns(spec, b.d.net.NetnsPath(st.ID))
		if err := writeNetFiles(bundle, spec.Hostname, ep.IP); err != nil {
			return -1, err
		}
		mountNetFiles(spec, bundle)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return -1, err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		return -1, err
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return -1, err
	}
	defer devNull.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return -1, err
	}
	defer pr.Close()
	c, err := b.rt.Create(ctx, id, bundle, runtime.WithStdio(devNull, pw, pw))
	pw.Close()
	if err != nil {
		return -1, err
	}
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(st.Output, pr)
		close(copied)
	}()
	// Whatever happens, the container goes, and with it any process it
	// left in the background holding the output pipe.
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Delete(dctx, true); err != nil {
			slog.Warn("remove build container", "id", id, "err", err)
		}
		<-copied
	}()
	if err := c.Start(ctx); err != nil {
		return -1, err
	}
	code, err := c.Wait(ctx)
	if err != nil {
		return -1, errors.Join(errors.New("build cancelled"), err)
	}
	return code, nil
}

// Build builds an image from a Dockerfile and its context (a tar stream),
// writing Docker's classic builder output to out. pull fetches a base
// image that is not stored (nil: not found is an error).
func (d *Daemon) Build(ctx context.Context, ctxTar io.Reader, opts build.Options, pull func(context.Context, string) (*image.Image, error), out io.Writer) (*image.Image, error) {
	b := &build.Builder{Store: d.images, Snapshot: d.snapshot, Runner: d.builds, Pull: pull, TmpDir: d.builds.root}
	return b.Build(ctx, ctxTar, opts, out)
}
