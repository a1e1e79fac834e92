package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/docker/go-connections/tlsconfig"
	"github.com/moby/moby/api/types/container"
	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/cgroups"
	"github.com/berth-containers/berth/pkg/gpu"
	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/registry"
	"github.com/berth-containers/berth/pkg/image/snapshot"
	"github.com/berth-containers/berth/pkg/network"
	"github.com/berth-containers/berth/pkg/shim"
)

// Daemon is a running berthd.
type Daemon struct {
	cfg      Config
	lock     *os.File
	db       *bolt.DB
	images   *image.Store
	registry *registry.Client
	snapshot snapshot.Driver
	ctrs     *containers
	net      *network.Manager
	gpus     *gpu.Manager
	builds   *builds
	execs    execs
	// log rotation of containers' logs
	logMaxSize  int64
	logMaxFiles int
	// closing: the daemon shuts down; no restarts now.
	closing atomic.Bool
	// onExit, when set, hears of each container's end.
	onExit func(*Container, ContainerState)
	// activated are the sockets systemd passed, by name, not yet used.
	activated map[string][]net.Listener
}

// New takes the root's lock and opens the stores.
func New(cfg Config) (*Daemon, error) {
	maxSize, maxFiles, err := cfg.logRotation()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Root, 0o711); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(cfg.Root, "berthd.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("data root %s is used by another berthd (%w)", cfg.Root, err)
	}
	d := &Daemon{cfg: cfg, lock: lock, snapshot: snapshot.Default(), logMaxSize: maxSize, logMaxFiles: maxFiles}
	if d.db, err = image.OpenDB(cfg.Root); err != nil {
		d.Close()
		return nil, err
	}
	if d.images, err = image.New(cfg.Root, d.db); err != nil {
		d.Close()
		return nil, err
	}
	d.registry = registry.New(d.images)
	d.registry.Insecure = cfg.InsecureRegistries
	if d.net, err = network.New(network.Config{Bridge: cfg.Bridge, Gateway: cfg.BIP,
		StateDir: filepath.Join(cfg.Root, "netns"), DB: d.db}); err != nil {
		d.Close()
		return nil, err
	}
	if d.gpus, err = gpu.New(gpu.Config{CDISpecDirs: cfg.CDISpecDirs, DriverRoot: cfg.NvidiaDriverRoot}); d.gpus == nil {
		d.Close()
		return nil, err
	} else if err != nil {
		slog.Warn("some CDI specs are not usable", "err", err)
	}
	if d.ctrs, err = newContainers(d); err != nil {
		d.Close()
		return nil, err
	}
	if d.builds, err = newBuilds(d); err != nil {
		d.Close()
		return nil, err
	}
	d.ctrs.recover()
	return d, nil
}

// Close flushes pending image data to disk and releases the stores and
// the lock.
func (d *Daemon) Close() {
	d.closing.Store(true)
	if d.ctrs != nil {
		d.ctrs.launcher.Close()
		d.ctrs.releaseAll()
	}
	if d.net != nil {
		// Bridges no container is on go, with their rules.
		if err := d.net.Shutdown(); err != nil {
			slog.Warn("remove idle bridges", "err", err)
		}
	}
	if d.images != nil {
		if err := d.images.Close(); err != nil {
			slog.Warn("flush image data at shutdown", "err", err)
		}
	}
	if d.db != nil {
		d.db.Close()
	}
	d.lock.Close()
}

// Images is the image store.
func (d *Daemon) Images() *image.Store { return d.images }

// Registry is the registry client.
func (d *Daemon) Registry() *registry.Client { return d.registry }

// Root is the data root.
func (d *Daemon) Root() string { return d.cfg.Root }

// StorageDriver is the snapshot driver's name.
func (d *Daemon) StorageDriver() string { return d.snapshot.Name() }

// ImageInUse reports whether a container uses the image.
func (d *Daemon) ImageInUse(id digest.Digest) bool { return d.ctrs.imageInUse(id) }

// Serve listens on the configured hosts and serves h (the API) until ctx
// ends, then shuts the server down gracefully.
func (d *Daemon) Serve(ctx context.Context, h http.Handler) error {
	trim := newIdleTrim(idleTrimAfter)
	go trim.run(ctx)
	// Requests in flight end with the daemon: a build's RUN container is
	// killed and its mounts go, rather than outlive berthd.
	base, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	srv := &http.Server{Handler: trim.track(h), ReadHeaderTimeout: 30 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}
	var listeners []net.Listener
	for _, h := range d.cfg.Hosts {
		l, err := d.listen(h)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return err
		}
		slog.Info("API listening", "address", h)
		listeners = append(listeners, l)
	}
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { errc <- srv.Serve(l) }()
	}
	// systemd's Type=notify: the API is served from here on.
	if _, err := sddaemon.SdNotify(false, sddaemon.SdNotifyReady); err != nil {
		slog.Warn("tell systemd berthd is ready", "err", err)
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	_, _ = sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	cancelRequests()
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// listen opens one -H address: unix://PATH (mode 0660, owned by root and
// the configured group), fd:// (sockets passed by systemd socket
// activation) or tcp://ADDR, with mutual TLS only.
func (d *Daemon) listen(host string) (net.Listener, error) {
	proto, addr, ok := strings.Cut(host, "://")
	if !ok {
		return nil, fmt.Errorf("host %q: want unix://PATH, fd:// or tcp://ADDR", host)
	}
	switch proto {
	case "unix":
		return d.listenUnix(addr)
	case "fd":
		return d.listenFD(addr)
	case "tcp":
		return d.listenTLS(host, addr)
	}
	return nil, fmt.Errorf("host %q: unknown protocol %q", host, proto)
}

// listenTLS serves addr with mutual TLS: TLS 1.2 or later, and a client
// certificate signed by the configured CA, checked at the handshake.
// Plain TCP is refused, loopback too: the API is root on this machine, and
// every local user can reach a loopback port.
func (d *Daemon) listenTLS(host, addr string) (net.Listener, error) {
	if !d.cfg.TLSVerify {
		return nil, fmt.Errorf("host %q: plain TCP would give root on this machine to anyone who can connect (every local user, on loopback): use --tlsverify with --tlscacert, --tlscert and --tlskey (scripts/gen-certs makes them)", host)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("host %q: %w", host, err)
	}
	cfg, err := tlsconfig.Server(tlsconfig.Options{CAFile: d.cfg.TLSCACert, CertFile: d.cfg.TLSCert, KeyFile: d.cfg.TLSKey,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, fmt.Errorf("host %q: TLS: %w", host, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(l, cfg), nil
}

// listenFD takes a socket systemd passed (LISTEN_FDS): fd:// is the
// first, fd://NAME the one named NAME (FileDescriptorName=).
func (d *Daemon) listenFD(name string) (net.Listener, error) {
	if d.activated == nil {
		ls, err := activation.ListenersWithNames()
		if err != nil {
			return nil, fmt.Errorf("fd://: %w", err)
		}
		d.activated = ls
	}
	for n, ls := range d.activated {
		if (name == "" || name == n) && len(ls) > 0 {
			l := ls[0]
			d.activated[n] = ls[1:]
			return l, nil
		}
	}
	return nil, fmt.Errorf("fd://%s: no socket passed by systemd (LISTEN_FDS) left for it", name)
}

func (d *Daemon) listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	// A socket left by a daemon that died is removed; a live one is not.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another daemon is listening on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	gid := 0
	if g, err := user.LookupGroup(d.cfg.Group); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
	} else {
		slog.Warn("socket group not found: only root can use the socket", "group", d.cfg.Group)
	}
	if err := os.Chown(path, 0, gid); err != nil {
		l.Close()
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// ContainerCreate creates a container (name "" for a generated one).
func (d *Daemon) ContainerCreate(ctx context.Context, name string, cfg *container.Config, hc *container.HostConfig) (*Container, error) {
	return d.ctrs.Create(ctx, name, cfg, hc)
}

// Container finds a container by ID, name or unique ID prefix.
func (d *Daemon) Container(ref string) (*Container, error) { return d.ctrs.Get(ref) }

// Containers lists the containers, newest first.
func (d *Daemon) Containers() ([]*Container, error) { return d.ctrs.List() }

// ContainerState says where a container is in its life.
func (d *Daemon) ContainerState(ctr *Container) ContainerState { return d.ctrs.State(ctr) }

// ContainerStart starts a container.
func (d *Daemon) ContainerStart(ctx context.Context, ctr *Container) error {
	return d.ctrs.Start(ctx, ctr)
}

// ContainerWait waits for a container to meet condition.
func (d *Daemon) ContainerWait(ctx context.Context, ctr *Container, condition container.WaitCondition) (ContainerState, error) {
	return d.ctrs.Wait(ctx, ctr, condition)
}

// ContainerKill signals a running container.
func (d *Daemon) ContainerKill(ctr *Container, sig syscall.Signal) error {
	if err := d.ctrs.Kill(ctr, sig); err != nil {
		return err
	}
	// As Docker: a SIGKILL returns once the container is down.
	if sig == syscall.SIGKILL {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = d.ctrs.Wait(ctx, ctr, container.WaitConditionNotRunning)
	}
	return nil
}

// ContainerStop stops a container: its stop signal, then SIGKILL.
func (d *Daemon) ContainerStop(ctx context.Context, ctr *Container, timeout time.Duration) error {
	return d.ctrs.Stop(ctx, ctr, timeout)
}

// ContainerRemove removes a container (a running one only when forced).
func (d *Daemon) ContainerRemove(ctx context.Context, ctr *Container, force bool) error {
	return d.ctrs.Remove(ctx, ctr, force)
}

// ContainerLog is the path of a container's json-file log.
func (d *Daemon) ContainerLog(ctr *Container) string { return d.ctrs.logPath(ctr.ID) }

// ContainerAttach claims a place on a container's streams.
func (d *Daemon) ContainerAttach(ctr *Container, o shim.AttachOptions) *Attachment {
	return d.ctrs.Attach(ctr, o)
}

// ContainerResize sets a running container's terminal size.
func (d *Daemon) ContainerResize(ctr *Container, height, width uint16) error {
	return d.ctrs.Resize(ctr, height, width)
}

// ContainerRename gives a container a new name.
func (d *Daemon) ContainerRename(ctr *Container, name string) error { return d.ctrs.Rename(ctr, name) }

// ContainerTop lists a running container's processes as ps(1) does.
func (d *Daemon) ContainerTop(ctx context.Context, ctr *Container, psArgs string) ([]string, [][]string, error) {
	return d.ctrs.Top(ctx, ctr, psArgs)
}

// ContainerStats reads a container's resource usage.
func (d *Daemon) ContainerStats(ctr *Container) (*cgroups.Stats, error) { return d.ctrs.Stats(ctr) }

// OnContainerExit sets a function told of every container's end.
func (d *Daemon) OnContainerExit(fn func(*Container, ContainerState)) { d.onExit = fn }

// ContainerSizeRw is the size of the files in a container's writable layer.
func (d *Daemon) ContainerSizeRw(ctr *Container) int64 {
	var n int64
	_ = filepath.WalkDir(filepath.Join(d.containerDir(ctr.ID), "snap", "upper"), func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// idleTrimAfter is how long berthd waits without requests before it gives
// the heap it freed back to the system.
const idleTrimAfter = 5 * time.Second

// idleTrim returns freed heap to the system once the API has been quiet
// for a while after some work: Go's scavenger alone keeps a daemon that
// was busy minutes ago several MB above its idle size.
type idleTrim struct {
	after   time.Duration
	last    atomic.Int64 // unix nanoseconds of the last request's end
	pending atomic.Bool  // requests came since the last trim
}

func newIdleTrim(after time.Duration) *idleTrim { return &idleTrim{after: after} }

func (t *idleTrim) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		t.last.Store(time.Now().UnixNano())
		t.pending.Store(true)
	})
}

func (t *idleTrim) run(ctx context.Context) {
	tick := time.NewTicker(t.after)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if t.pending.Load() && time.Since(time.Unix(0, t.last.Load())) >= t.after {
			t.pending.Store(false)
			debug.FreeOSMemory()
		}
	}
}
