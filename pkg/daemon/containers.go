package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	nettypes "github.com/moby/moby/api/types/network"
	digest "github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/berth-containers/berth/pkg/cgroups"
	"github.com/berth-containers/berth/pkg/gpu"
	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/snapshot"
	"github.com/berth-containers/berth/pkg/runtime"
	"github.com/berth-containers/berth/pkg/shim"
)

var (
	containersBucket     = []byte("containers")      // ID -> Container
	containerNamesBucket = []byte("container-names") // name -> ID
)

// Container is a container's record.
type Container struct {
	ID         string                `json:"id"`
	Name       string                `json:"name"`
	Created    time.Time             `json:"created"`
	ImageRef   string                `json:"imageRef"` // as the user gave it
	ImageID    digest.Digest         `json:"imageID"`
	Path       string                `json:"path"`
	Args       []string              `json:"args"`
	Config     *container.Config     `json:"config"`
	HostConfig *container.HostConfig `json:"hostConfig"`
	// ManuallyStopped: stopped or killed by the user, which restart
	// policies respect.
	ManuallyStopped bool `json:"manuallyStopped,omitempty"`
	RestartCount    int  `json:"restartCount,omitempty"`
	// Networks are the networks connected to the container besides the
	// one it runs on (network connect), joined at each start.
	Networks []string `json:"networks,omitempty"`
	// GPUs are the GPUs (UUIDs, or CDI names) and CDI devices it holds,
	// chosen at create.
	GPUs []string `json:"gpus,omitempty"`
}

// ContainerState is where a container is in its life.
type ContainerState struct {
	Status     container.ContainerState
	StartedAt  time.Time
	Pid        int
	ExitCode   int
	OOMKilled  bool
	Error      string
	FinishedAt time.Time
}

// containers manages the daemon's containers.
type containers struct {
	d       *Daemon
	rt      *runtime.Runtime
	locks   sync.Map // ID -> *sync.Mutex: one change at a time
	removed sync.Map // ID -> exit code, for waiters on "removed"
	backoff sync.Map // ID -> last restart delay

	launcher *shim.Launcher // keeps a shim started ahead

	discarding sync.WaitGroup // removed containers' directories being deleted
	gpuMu      sync.Mutex     // GPU choice and record, one create at a time

	chMu    sync.Mutex
	changes map[string]chan struct{} // closed at the next change

	pendMu  sync.Mutex
	pending map[string][]*pendingAttach // attach clients before start
}

func (d *Daemon) containerDir(id string) string { return filepath.Join(d.cfg.Root, "containers", id) }

func newContainers(d *Daemon) (*containers, error) {
	rt, err := runtime.New(filepath.Join(d.cfg.Root, "runtime"))
	if err != nil {
		return nil, err
	}
	err = d.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{containersBucket, containerNamesBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &containers{d: d, rt: rt, changes: map[string]chan struct{}{}, pending: map[string][]*pendingAttach{},
		launcher: shim.NewLauncher(exe)}
	if c.launcher.Monitor() == "" {
		slog.Warn("no " + shim.MonitorName + " beside berthd: each shim stays a Go process, several MB per container")
	}
	// The trash: what a stopped berthd had not deleted yet goes now.
	trash := trashDir(d.cfg.Root)
	left, _ := os.ReadDir(trash)
	for _, e := range left {
		if err := c.purge(filepath.Join(trash, e.Name()), e.Name()); err != nil {
			return nil, fmt.Errorf("trash %s: %w", e.Name(), err)
		}
	}
	if err := os.MkdirAll(trash, 0o700); err != nil {
		return nil, err
	}
	return c, nil
}

var validName = regexp.MustCompile(`^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// Create makes a container from an image: its record, its directory and
// the runtime bundle. It starts nothing.
func (c *containers) Create(ctx context.Context, name string, cfg *container.Config, hc *container.HostConfig) (*Container, error) {
	if cfg == nil || cfg.Image == "" {
		return nil, invalid(errors.New("no image given"))
	}
	if hc == nil {
		hc = &container.HostConfig{}
	}
	for _, name := range slices.Sorted(maps.Keys(c.d.cfg.DefaultUlimits)) {
		if !slices.ContainsFunc(hc.Ulimits, func(u *container.Ulimit) bool { return u.Name == name }) {
			hc.Ulimits = append(hc.Ulimits, c.d.cfg.DefaultUlimits[name])
		}
	}
	if bridged(hc) {
		if _, err := c.d.net.Network(networkOf(hc)); err != nil {
			return nil, err
		}
	}
	if target, ok := strings.CutPrefix(string(hc.NetworkMode), "container:"); ok {
		if _, err := c.Get(target); err != nil {
			return nil, err
		}
		if cfg.Hostname != "" {
			return nil, invalid(errors.New("conflicting options: hostname and the network mode"))
		}
	}
	if (len(hc.PortBindings) > 0 || hc.PublishAllPorts) && !bridged(hc) {
		return nil, invalid(fmt.Errorf("conflicting options: port publishing and the container type network mode %q", hc.NetworkMode))
	}
	gpuReq, err := gpu.ParseRequests(hc.DeviceRequests, hc.Devices)
	if err != nil {
		return nil, invalid(err)
	}
	if name != "" && !validName.MatchString(name) {
		return nil, invalid(fmt.Errorf("invalid container name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", name))
	}
	name = strings.TrimPrefix(name, "/")
	img, err := c.d.images.Get(cfg.Image)
	if errdefs.IsNotFound(err) && !strings.HasPrefix(cfg.Image, "sha256:") {
		if _, nerr := image.NormalizeName(cfg.Image); nerr != nil {
			return nil, nerr // a name that cannot be: say why
		}
		return nil, errdefs.ErrNotFound.WithMessage("No such image: " + cfg.Image)
	}
	if err != nil {
		return nil, err
	}
	imgCfg, err := c.d.images.Config(img)
	if err != nil {
		return nil, err
	}
	rc, err := image.RunConfigOf(imgCfg, image.Overrides{Entrypoint: cfg.Entrypoint, Cmd: cfg.Cmd, Env: cfg.Env, Cwd: cfg.WorkingDir, User: cfg.User})
	if err != nil {
		return nil, invalid(err)
	}
	ctr := &Container{ID: newID(), Name: name, Created: time.Now().UTC(), ImageRef: cfg.Image, ImageID: img.ID,
		Path: rc.Args[0], Args: rc.Args[1:], Config: cfg, HostConfig: hc}
	if cfg.Hostname == "" {
		cfg.Hostname = ctr.ID[:12]
	}
	if err := c.nameFree(ctr.Name); err != nil { // fail early; record checks again
		return nil, err
	}
	dir := c.d.containerDir(ctr.ID)
	ok := false
	defer func() {
		if !ok { // record, the last step, commits all or nothing
			_ = snapshot.Remove(c.d.snapshot, filepath.Join(dir, "snap"))
			os.RemoveAll(dir)
		}
	}()
	if err := os.MkdirAll(filepath.Join(dir, "bundle"), 0o700); err != nil {
		return nil, err
	}
	// Mounted to read the image's /etc/passwd for the user; the writable
	// layer in snap/ lives as long as the container.
	rootfs, err := c.d.snapshot.Mount(c.d.images.LayerDirs(img), filepath.Join(dir, "snap"))
	if err != nil {
		return nil, err
	}
	spec, err := ContainerSpec(rootfs, rc, cfg, hc)
	if err != nil {
		return nil, err
	}
	spec.Linux.CgroupsPath = c.cgroupPath(ctr.ID)
	if !gpuReq.Empty() {
		c.gpuMu.Lock() // until recorded
		defer c.gpuMu.Unlock()
		if err := c.applyGPUs(ctr, gpuReq, spec, rootfs); err != nil {
			return nil, err
		}
	}
	if bridged(hc) {
		// The image's EXPOSE, for -P, as Docker keeps them in the config.
		for _, p := range rc.ExposedPorts {
			if port, err := nettypes.ParsePort(p); err == nil {
				if cfg.ExposedPorts == nil {
					cfg.ExposedPorts = nettypes.PortSet{}
				}
				cfg.ExposedPorts[port] = struct{}{}
			}
		}
		if err := c.bridgeSpec(ctr, spec); err != nil {
			return nil, err
		}
	}
	b, err := json.Marshal(spec) // read by the runtime, not by people: compact, 62% of the indented size
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "bundle", "config.json"), b, 0o600); err != nil {
		return nil, err
	}
	// The log exists from the start, so that attach can follow it.
	if err := os.WriteFile(c.logPath(ctr.ID), nil, 0o640); err != nil {
		return nil, err
	}
	if err := c.record(ctr); err != nil {
		return nil, err
	}
	ok = true
	// A run starts the container at once and finds the root filesystem
	// mounted (an unmount waits for the kernel's RCU grace period, 1 to 2
	// ms); a container only created gives its mount back soon.
	time.AfterFunc(createdMountGrace, func() { c.release(ctr.ID) })
	return ctr, nil
}

// createdMountGrace is how long a created container keeps the root
// filesystem mounted at create, waiting for its start: a run's comes
// within milliseconds; a thousand creates in a row should not pile up
// mounts.
const createdMountGrace = time.Second

// release frees what a container that does not run holds: the root
// filesystem, mounted at create for its start or left mounted at its end,
// and the runtime state and cgroup its end left (AwaitEnd records only the
// exit, so that a run's reply does not wait for them). Nothing for a
// container removed (its directory and runtime state go in the trash) or
// running (its shim, or berthd after AwaitEnd, releases it at the end). A
// restart waits 100 ms at least, and finds it released; a start under the
// lock before that deletes the runtime state itself (start).
func (c *containers) release(id string) {
	defer c.lock(id)()
	ctr, err := c.Get(id)
	if err != nil || c.State(ctr).Status == container.StateRunning {
		return
	}
	c.deleteRuntime(id)
	if err := c.d.snapshot.Unmount(filepath.Join(c.d.containerDir(id), "snap")); err != nil {
		slog.Warn("unmount a container's root filesystem", "container", id, "err", err)
	}
}

// deleteRuntime deletes the runtime's state and cgroup of a container
// whose process ended, if they are still there.
func (c *containers) deleteRuntime(id string) {
	if rc, err := c.rt.Load(id); err == nil {
		if err := rc.Delete(context.Background(), true); err != nil {
			slog.Warn("delete an ended container's runtime state", "container", id, "err", err)
		}
	}
}

// releaseAll releases, at daemon stop, what containers that do not run
// still hold (created in the last moments, or ended just before), and
// waits for the deletion of removed ones. (recover unmounts at start, with
// the states it reads anyway; start deletes runtime state left.)
func (c *containers) releaseAll() {
	c.discarding.Wait()
	all, _ := c.List()
	for _, ctr := range all {
		c.release(ctr.ID)
	}
}

// cgroupPath is the container's cgroup: PARENT/ID.
func (c *containers) cgroupPath(id string) string { return path.Join("/", c.d.cfg.CgroupParent, id) }

func (c *containers) logPath(id string) string {
	return filepath.Join(c.d.containerDir(id), id+"-json.log")
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// nameFree fails if a container has the name.
func (c *containers) nameFree(name string) error {
	if name == "" {
		return nil
	}
	return c.d.db.View(func(tx *bolt.Tx) error {
		if id := tx.Bucket(containerNamesBucket).Get([]byte(name)); id != nil {
			return nameInUse(name, id)
		}
		return nil
	})
}

func nameInUse(name string, id []byte) error {
	return fmt.Errorf("the container name %q is already in use by container %s: %w", "/"+name, id, errdefs.ErrConflict)
}

// record stores a new container and its name (generated if empty), or
// fails if the name is taken: one transaction.
func (c *containers) record(ctr *Container) error {
	return c.d.db.Update(func(tx *bolt.Tx) error {
		names := tx.Bucket(containerNamesBucket)
		if ctr.Name == "" {
			for retry := 0; ; retry++ {
				ctr.Name = generateName(retry)
				if names.Get([]byte(ctr.Name)) == nil {
					break
				}
			}
		} else if id := names.Get([]byte(ctr.Name)); id != nil {
			return nameInUse(ctr.Name, id)
		}
		if err := names.Put([]byte(ctr.Name), []byte(ctr.ID)); err != nil {
			return err
		}
		b, err := json.Marshal(ctr)
		if err != nil {
			return err
		}
		return tx.Bucket(containersBucket).Put([]byte(ctr.ID), b)
	})
}

var (
	adjectives = []string{"agile", "amazing", "bold", "brave", "bright", "busy", "calm", "careful", "charming", "cheerful",
		"clever", "cool", "cosmic", "crisp", "curious", "daring", "dazzling", "eager", "earnest", "elated", "elegant",
		"epic", "fancy", "fervent", "festive", "fond", "friendly", "gallant", "gentle", "glad", "golden", "happy",
		"hardy", "hopeful", "humble", "jolly", "jovial", "keen", "kind", "lucid", "lucky", "merry", "mighty", "modest",
		"nifty", "noble", "patient", "peaceful", "plucky", "polite", "proud", "quick", "quiet", "radiant", "serene",
		"sharp", "silly", "sleepy", "steady", "stoic", "sunny", "swift", "tender", "tidy", "vibrant", "vivid", "warm",
		"wise", "witty", "youthful", "zealous", "zen"}
	surnames = []string{"agnesi", "archimedes", "babbage", "bardeen", "bell", "bohr", "boole", "borg", "brahe", "cannon",
		"carson", "cerf", "curie", "darwin", "dijkstra", "einstein", "euclid", "euler", "faraday", "fermat", "fermi",
		"feynman", "franklin", "galileo", "gauss", "goldberg", "goodall", "hamilton", "hawking", "heisenberg", "hertz",
		"hodgkin", "hopper", "hypatia", "jackson", "johnson", "kepler", "knuth", "lamarr", "lamport", "leakey",
		"liskov", "lovelace", "maxwell", "mayer", "mccarthy", "meitner", "mendel", "morse", "newton", "noether",
		"pascal", "pasteur", "perlman", "planck", "ptolemy", "ritchie", "sammet", "shannon", "shockley", "sinoussi",
		"tesla", "thompson", "torvalds", "turing", "volta", "wilson", "wozniak", "wright", "yalow", "yonath"}
)

// generateName makes a name like Docker's: adjective_surname, with a
// number after it from the fourth try on: there are about 5000 pairs.
func generateName(retry int) string {
	pick := func(n int) int64 {
		v, _ := rand.Int(rand.Reader, big.NewInt(int64(n)))
		return v.Int64()
	}
	name := adjectives[pick(len(adjectives))] + "_" + surnames[pick(len(surnames))]
	if retry > 3 {
		name += strconv.FormatInt(pick(10*retry), 10)
	}
	return name
}

func (c *containers) save(ctr *Container) error {
	b, err := json.Marshal(ctr)
	if err != nil {
		return err
	}
	return c.d.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(containersBucket).Put([]byte(ctr.ID), b) })
}

func (c *containers) deleteRecord(ctr *Container) error {
	return c.d.db.Update(func(tx *bolt.Tx) error {
		if id := tx.Bucket(containerNamesBucket).Get([]byte(ctr.Name)); string(id) == ctr.ID {
			if err := tx.Bucket(containerNamesBucket).Delete([]byte(ctr.Name)); err != nil {
				return err
			}
		}
		return tx.Bucket(containersBucket).Delete([]byte(ctr.ID))
	})
}

// Get finds a container by full ID, name (with or without "/") or a
// unique ID prefix.
func (c *containers) Get(ref string) (*Container, error) {
	var ctr Container
	err := c.d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(containersBucket)
		id := []byte(ref)
		if v := tx.Bucket(containerNamesBucket).Get([]byte(strings.TrimPrefix(ref, "/"))); v != nil {
			id = v
		} else if b.Get(id) == nil && ref != "" {
			var found [][]byte
			cur := b.Cursor()
			for k, _ := cur.Seek([]byte(ref)); k != nil && strings.HasPrefix(string(k), ref); k, _ = cur.Next() {
				found = append(found, append([]byte(nil), k...))
			}
			if len(found) > 1 {
				return fmt.Errorf("multiple containers match %q: %w", ref, errdefs.ErrInvalidArgument)
			}
			if len(found) == 1 {
				id = found[0]
			}
		}
		v := b.Get(id)
		if v == nil {
			return errdefs.ErrNotFound.WithMessage("No such container: " + ref)
		}
		return json.Unmarshal(v, &ctr)
	})
	if err != nil {
		return nil, err
	}
	return &ctr, nil
}

// List returns every container, newest first.
func (c *containers) List() ([]*Container, error) {
	var out []*Container
	err := c.d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(containersBucket).ForEach(func(_, v []byte) error {
			var ctr Container
			if err := json.Unmarshal(v, &ctr); err != nil {
				return err
			}
			out = append(out, &ctr)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, err
}

// State reads where a container is, from files, not from its record: its
// shim's config says it was started (and when), exit.json that it ended,
// the runtime state or a live shim that it runs.
func (c *containers) State(ctr *Container) ContainerState {
	dir := c.d.containerDir(ctr.ID)
	started := shim.StartedAt(dir)
	if started.IsZero() {
		return ContainerState{Status: container.StateCreated}
	}
	st := c.startedState(ctr, dir)
	st.StartedAt = started
	return st
}

func (c *containers) startedState(ctr *Container, dir string) ContainerState {
	if e, err := shim.ReadExit(dir); err == nil {
		return exitState(e)
	}
	if rc, err := c.rt.Load(ctr.ID); err == nil {
		if st, err := rc.State(); err == nil && st.Status != runtime.StatusStopped {
			return ContainerState{Status: container.StateRunning, Pid: st.Pid}
		}
	}
	// Its process ended: a live shim is still recording the exit, or
	// recorded it meanwhile.
	alive := shim.Alive(dir)
	if e, err := shim.ReadExit(dir); err == nil {
		return exitState(e)
	}
	if alive {
		return ContainerState{Status: container.StateRunning}
	}
	// Started, not running, no exit recorded: its shim died with it.
	return ContainerState{Status: container.StateDead, ExitCode: 255, Error: "the container's monitor ended without recording its exit"}
}

// notRunning is the conflict of acting on a container that does not run.
func notRunning(id string) error {
	return fmt.Errorf("container %s is not running: %w", id, errdefs.ErrConflict)
}

func exitState(e *shim.Exit) ContainerState {
	return ContainerState{Status: container.StateExited, ExitCode: e.ExitCode, OOMKilled: e.OOMKilled, Error: e.Error, FinishedAt: e.FinishedAt}
}

// lock serialises the changes to one container.
func (c *containers) lock(id string) func() {
	m, _ := c.locks.LoadOrStore(id, &sync.Mutex{})
	m.(*sync.Mutex).Lock()
	return m.(*sync.Mutex).Unlock
}

// changed returns a channel closed at the container's next change of
// state (exit, start, removal). Take it before reading the state.
func (c *containers) changed(id string) <-chan struct{} {
	c.chMu.Lock()
	defer c.chMu.Unlock()
	ch, ok := c.changes[id]
	if !ok {
		ch = make(chan struct{})
		c.changes[id] = ch
	}
	return ch
}

func (c *containers) notify(id string) {
	c.chMu.Lock()
	defer c.chMu.Unlock()
	if ch, ok := c.changes[id]; ok {
		close(ch)
		delete(c.changes, id)
	}
}

// pendingAttach is an attach client waiting for the container to start.
type pendingAttach struct {
	opts shim.AttachOptions
	conn chan attachResult
}

type attachResult struct {
	conn *net.UnixConn
	err  error
}

// Attachment is an attach client's place: its connection to the
// container's streams now, or once the container starts.
type Attachment struct {
	c       *containers
	id      string
	pending *pendingAttach
	conn    *net.UnixConn
	err     error
}

// Attach claims a place on the container's streams: at once for a running
// one; for a created one at its start, so that no output is missed (which
// is why it is called before the client is told to go on and start it).
// Conn then waits for the connection: nil for a container that ended.
func (c *containers) Attach(ctr *Container, o shim.AttachOptions) *Attachment {
	defer c.lock(ctr.ID)()
	a := &Attachment{c: c, id: ctr.ID}
	cur, err := c.Get(ctr.ID)
	if err != nil {
		a.err = err
		return a
	}
	if c.State(cur).Status == container.StateRunning {
		a.conn, a.err = shim.Attach(c.d.containerDir(ctr.ID), o)
		return a
	}
	// Created or ended: as dockerd's stream broadcasters, the client gets
	// the next start's output (`docker start -a` attaches, then starts).
	a.pending = &pendingAttach{opts: o, conn: make(chan attachResult, 1)}
	c.pendMu.Lock()
	c.pending[ctr.ID] = append(c.pending[ctr.ID], a.pending)
	c.pendMu.Unlock()
	return a
}

// Conn waits for the connection until ctx ends.
func (a *Attachment) Conn(ctx context.Context) (*net.UnixConn, error) {
	if a.pending == nil {
		return a.conn, a.err
	}
	select {
	case r := <-a.pending.conn:
		return r.conn, r.err
	case <-ctx.Done():
		c := a.c
		c.pendMu.Lock()
		list := c.pending[a.id]
		for i, q := range list {
			if q == a.pending {
				c.pending[a.id] = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		c.pendMu.Unlock()
		select { // handed over meanwhile
		case r := <-a.pending.conn:
			if r.conn != nil {
				r.conn.Close()
			}
		default:
		}
		return nil, ctx.Err()
	}
}

// Close gives the place up.
func (a *Attachment) Close() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if conn, _ := a.Conn(ctx); conn != nil {
		conn.Close()
	}
}

// Resize sets the size of a running container's terminal.
func (c *containers) Resize(ctr *Container, height, width uint16) error {
	if st := c.State(ctr); st.Status != container.StateRunning {
		return notRunning(ctr.ID[:12])
	}
	if !ctr.Config.Tty {
		return nil
	}
	return shim.Resize(c.d.containerDir(ctr.ID), shim.Size{Height: height, Width: width})
}

// Start runs a created or exited container through a new shim.
func (c *containers) Start(ctx context.Context, ctr *Container) error {
	err := c.start(ctx, ctr, userStart)
	if err != nil && ctr.HostConfig.AutoRemove {
		// As Docker: an --rm container that could not start is removed,
		// and whoever waits for its removal (docker run) hears of it.
		if rerr := c.Remove(context.Background(), ctr, true); rerr != nil {
			slog.Warn("auto-remove after a failed start", "container", ctr.ID, "err", rerr)
		}
	}
	return err
}

// startKind is who starts a container.
type startKind int

const (
	userStart     startKind = iota // docker start: a stop's mark is cleared
	policyRestart                  // the restart policy: counted
	restoreStart                   // berthd's own start: ctr as it was then
)

// start is Start; a start by berthd (policy, or restore at its start) does
// nothing to a container the user stopped meanwhile. (Docker's restore
// starts an always container stopped before berthd stopped: ctr, as read
// then, says so.)
func (c *containers) start(ctx context.Context, ctr *Container, kind startKind) error {
	defer c.lock(ctr.ID)()
	stoppedBefore := ctr.ManuallyStopped
	if cur, err := c.Get(ctr.ID); err == nil {
		*ctr = *cur
	}
	// Checked (and counted) under the lock: a stop that marked the
	// container meanwhile is seen here, never overwritten.
	if ctr.ManuallyStopped && (kind == policyRestart || (kind == restoreStart && !stoppedBefore)) {
		return nil
	}
	if kind == policyRestart {
		ctr.RestartCount++
		if err := c.save(ctr); err != nil {
			return err
		}
	}
	if st := c.State(ctr); st.Status == container.StateRunning {
		return nil // docker start of a running container is no error
	}
	// What the last run left, if release has not come yet (or berthd
	// was killed before it did).
	c.deleteRuntime(ctr.ID)
	dir := c.d.containerDir(ctr.ID)
	snap := filepath.Join(dir, "snap")
	rootfs, err := c.d.snapshot.Mount(c.d.images.LayerDirs(&image.Image{Layers: c.layers(ctr)}), snap)
	if err != nil {
		return err
	}
	if bridged(ctr.HostConfig) {
		if err := c.attach(ctr); err != nil {
			_ = c.d.snapshot.Unmount(snap)
			return err
		}
	}
	if target, ok := strings.CutPrefix(string(ctr.HostConfig.NetworkMode), "container:"); ok {
		if err := c.joinNetwork(ctr, target); err != nil {
			_ = c.d.snapshot.Unmount(snap)
			return err
		}
	}
	cfg := shim.Config{ID: ctr.ID, Bundle: filepath.Join(dir, "bundle"), RuntimeRoot: c.rt.Root(),
		LogPath: c.logPath(ctr.ID), LogMaxSize: c.d.logMaxSize, LogMaxFiles: c.d.logMaxFiles,
		Tty: ctr.Config.Tty, OpenStdin: ctr.Config.OpenStdin, StdinOnce: ctr.Config.StdinOnce}
	if c.d.snapshot.Name() == "overlay" {
		cfg.Unmount = rootfs
	}
	// From shim.json on, State asks exit.json, the runtime and the shim.
	launch, err := c.launcher.Create(dir, cfg)
	if err != nil {
		shim.Forget(dir) // not started: still "created", as Docker says
		_ = c.d.snapshot.Unmount(snap)
		c.detach(ctr.ID)
		return invalid(err)
	}
	c.pendMu.Lock()
	pending := c.pending[ctr.ID]
	delete(c.pending, ctr.ID)
	c.pendMu.Unlock()
	for _, p := range pending {
		conn, err := shim.Attach(dir, p.opts)
		p.conn <- attachResult{conn, err}
	}
	if ctr.ManuallyStopped {
		ctr.ManuallyStopped = false
		if err := c.save(ctr); err != nil {
			launch.Abort()
			return err
		}
	}
	watch, werr := shim.Watch(dir)
	if err := launch.Start(); err != nil {
		// The shim, or berth-monitor, records the end of a start that
		// failed (its code and why): the caller hears of the failure once
		// the container is seen exited, and its --rm finds it so.
		if watch != nil {
			shim.AwaitEnd(watch, dir)
		}
		c.detach(ctr.ID)
		c.notify(ctr.ID)
		return invalid(err)
	}
	if werr != nil {
		slog.Warn("watch container", "container", ctr.ID, "err", werr)
	}
	c.notify(ctr.ID)
	go c.monitor(ctr.ID, watch)
	return nil
}

// monitor waits for the container's exit, through its shim's socket (or,
// where that is gone, by polling), then applies --rm and the restart
// policy.
func (c *containers) monitor(id string, watch net.Conn) {
	if watch != nil {
		shim.AwaitEnd(watch, c.d.containerDir(id))
	}
	defer c.release(id)
	var ctr *Container
	var st ContainerState
	for {
		var err error
		if ctr, err = c.Get(id); err != nil {
			return // removed
		}
		if st = c.State(ctr); st.Status != container.StateRunning {
			break
		}
		time.Sleep(time.Second)
	}
	if st.Status == container.StateDead {
		st = c.recordLost(ctr, st)
	}
	c.detach(id)
	c.notify(id)
	if c.d.onExit != nil {
		c.d.onExit(ctr, st)
	}
	if ctr.HostConfig.AutoRemove {
		if err := c.Remove(context.Background(), ctr, true); err != nil {
			slog.Warn("auto-remove", "container", id, "err", err)
		}
		return
	}
	c.maybeRestart(ctr, st)
}

// layers are the layers of a container's image.
func (c *containers) layers(ctr *Container) []image.Layer {
	img, err := c.d.images.Get(ctr.ImageID.String())
	if err != nil {
		return nil
	}
	return img.Layers
}

// Wait blocks until the container meets condition and returns its exit.
func (c *containers) Wait(ctx context.Context, ctr *Container, condition container.WaitCondition) (ContainerState, error) {
	var since time.Time
	if condition == container.WaitConditionNextExit {
		since = time.Now()
	}
	for {
		changed := c.changed(ctr.ID)
		if condition == container.WaitConditionRemoved {
			if code, ok := c.removed.Load(ctr.ID); ok {
				return ContainerState{Status: container.StateExited, ExitCode: code.(int)}, nil
			}
		} else if cur, err := c.Get(ctr.ID); err == nil {
			st := c.State(cur)
			ended := st.Status == container.StateExited || st.Status == container.StateDead
			if ended && (since.IsZero() || st.FinishedAt.After(since)) {
				return st, nil
			}
			if condition != container.WaitConditionNextExit && st.Status == container.StateCreated {
				return st, nil
			}
		} else {
			return ContainerState{}, err
		}
		select {
		case <-ctx.Done():
			return ContainerState{}, ctx.Err()
		case <-changed:
		}
	}
}

// Kill sends a signal to the container's processes.
func (c *containers) Kill(ctr *Container, sig syscall.Signal) error {
	if st := c.State(ctr); st.Status != container.StateRunning {
		return notRunning(ctr.ID[:12])
	}
	rc, err := c.rt.Load(ctr.ID)
	if err != nil {
		return err
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		unlock := c.lock(ctr.ID) // as in Stop: a restart never overwrites the mark
		c.markStopped(ctr)
		unlock()
	}
	return rc.Kill(sig)
}

// markStopped records that the user stopped the container, which the
// restart policies (but for always, on a daemon restart) respect. The
// caller holds the container's lock.
func (c *containers) markStopped(ctr *Container) {
	if cur, err := c.Get(ctr.ID); err == nil && !cur.ManuallyStopped {
		cur.ManuallyStopped = true
		_ = c.save(cur)
	}
}

// Stop sends the stop signal, then SIGKILL after timeout.
func (c *containers) Stop(ctx context.Context, ctr *Container, timeout time.Duration) error {
	// Marked under the container's lock, so that a restart in progress
	// either sees the mark or has started the container when Stop looks;
	// a restart waiting for its delay hears of it and gives up.
	unlock := c.lock(ctr.ID)
	c.markStopped(ctr)
	st := c.State(ctr)
	unlock()
	c.notify(ctr.ID)
	if st.Status != container.StateRunning {
		return nil
	}
	sig := syscall.SIGTERM
	if s, ok := signals[strings.TrimPrefix(strings.ToUpper(ctr.Config.StopSignal), "SIG")]; ok {
		sig = s
	}
	_ = c.Kill(ctr, sig)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := c.Wait(wctx, ctr, container.WaitConditionNotRunning); err == nil {
		return nil
	}
	_ = c.Kill(ctr, syscall.SIGKILL)
	_, err := c.Wait(ctx, ctr, container.WaitConditionNotRunning)
	return err
}

var signals = map[string]syscall.Signal{"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"KILL": syscall.SIGKILL, "HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2}

// trashDir holds removed containers' directories until they are deleted,
// off the path of the removal.
func trashDir(root string) string { return filepath.Join(root, "trash") }

// discard moves a removed container's directory into the trash, where a
// goroutine deletes its runtime state and cgroup (if still there),
// unmounts its root filesystem (if still mounted) and deletes it: the
// cgroup's rmdirs, the unmount's RCU wait and deleting the tree, writable
// layer included, take milliseconds a `run --rm` would wait for. What a stop
// leaves there goes at the next start.
func (c *containers) discard(dir, id string) error {
	to := filepath.Join(trashDir(c.d.cfg.Root), filepath.Base(dir))
	if err := os.Rename(dir, to); err != nil { // a mount inside moves along
		return c.purge(dir, id) // where it is, then
	}
	c.discarding.Add(1)
	go func() {
		defer c.discarding.Done()
		if err := c.purge(to, id); err != nil {
			slog.Warn("delete a removed container's files", "dir", to, "err", err)
		}
	}()
	return nil
}

// purge deletes a removed container, its directory at dir (in the trash):
// its runtime state and cgroup if still there (IDs are never used again,
// so they can go after the removal's reply), its root filesystem's mount,
// then the directory. One whose unmount fails stays: nothing is deleted
// through a mount.
func (c *containers) purge(dir, id string) error {
	c.deleteRuntime(id)
	if err := c.d.snapshot.Unmount(filepath.Join(dir, "snap")); err != nil {
		return fmt.Errorf("unmount its root filesystem: %w", err)
	}
	return os.RemoveAll(dir)
}

// Remove deletes a container; a running one only when forced (killed).
func (c *containers) Remove(ctx context.Context, ctr *Container, force bool) error {
	st := c.State(ctr)
	if st.Status == container.StateRunning {
		if !force {
			return fmt.Errorf("cannot remove container %s: container is running: stop the container before removing or force remove: %w", "/"+ctr.Name, errdefs.ErrConflict)
		}
		_ = c.Kill(ctr, syscall.SIGKILL)
		var err error
		if st, err = c.Wait(ctx, ctr, container.WaitConditionNotRunning); err != nil {
			return err
		}
	}
	unlock := c.lock(ctr.ID)
	defer unlock()
	if _, err := c.Get(ctr.ID); err != nil {
		return err // removed meanwhile (--rm and an explicit rm)
	}
	dir := c.d.containerDir(ctr.ID)
	c.detach(ctr.ID)
	if err := c.discard(dir, ctr.ID); err != nil {
		return err
	}
	if err := c.deleteRecord(ctr); err != nil {
		return err
	}
	c.pendMu.Lock()
	for _, p := range c.pending[ctr.ID] {
		p.conn <- attachResult{}
	}
	delete(c.pending, ctr.ID)
	c.pendMu.Unlock()
	c.removed.Store(ctr.ID, st.ExitCode)
	// Kept a while for late "removed" waiters, then forgotten.
	time.AfterFunc(time.Minute, func() { c.removed.Delete(ctr.ID) })
	c.notify(ctr.ID)
	c.locks.Delete(ctr.ID)
	return nil
}

// imageInUse reports whether a container uses the image.
func (c *containers) imageInUse(id digest.Digest) bool {
	all, _ := c.List()
	for _, ctr := range all {
		if ctr.ImageID == id {
			return true
		}
	}
	return false
}

// Restart backoff, as Docker's: 100 ms doubling to a minute, back to the
// start once a run lasted 10 s.
const (
	restartBackoffMin = 100 * time.Millisecond
	restartBackoffMax = time.Minute
	restartResetAfter = 10 * time.Second
)

// maybeRestart applies the restart policy to a container that just ended.
func (c *containers) maybeRestart(ctr *Container, st ContainerState) {
	p := ctr.HostConfig.RestartPolicy
	switch {
	case c.d.closing.Load():
		return
	case p.Name == container.RestartPolicyAlways, p.Name == container.RestartPolicyUnlessStopped:
		if ctr.ManuallyStopped {
			return
		}
	case p.Name == container.RestartPolicyOnFailure:
		if ctr.ManuallyStopped || st.ExitCode == 0 || (p.MaximumRetryCount > 0 && ctr.RestartCount >= p.MaximumRetryCount) {
			return
		}
	default:
		return
	}
	delay := restartBackoffMin
	if v, ok := c.backoff.Load(ctr.ID); ok && st.FinishedAt.Sub(st.StartedAt) < restartResetAfter {
		delay = min(v.(time.Duration)*2, restartBackoffMax)
	}
	c.backoff.Store(ctr.ID, delay)
	go func() {
		changed := c.changed(ctr.ID)
		select {
		case <-time.After(delay):
		case <-changed: // started, stopped or removed by the user meanwhile
			return
		}
		cur, err := c.Get(ctr.ID)
		if err != nil || cur.ManuallyStopped || c.d.closing.Load() {
			return
		}
		if err := c.start(context.Background(), cur, policyRestart); err != nil {
			slog.Warn("restart", "container", ctr.ID, "err", err)
		}
	}()
}

// recordLost settles a container that ended without its shim recording
// it (the shim was killed): exited, 255, as Docker marks a container
// whose task is gone at restore; what it left is cleaned up.
func (c *containers) recordLost(ctr *Container, st ContainerState) ContainerState {
	e := shim.Exit{ExitCode: 255, FinishedAt: time.Now().UTC(), Error: st.Error}
	if err := shim.RecordExit(c.d.containerDir(ctr.ID), e); err != nil {
		slog.Warn("record a lost container's exit", "container", ctr.ID, "err", err)
	}
	if rc, err := c.rt.Load(ctr.ID); err == nil {
		_ = rc.Delete(context.Background(), true)
	}
	_ = c.d.snapshot.Unmount(filepath.Join(c.d.containerDir(ctr.ID), "snap"))
	c.detach(ctr.ID)
	return c.State(ctr)
}

// recover runs at daemon start: it watches the containers whose shims
// live on, and starts those whose policy says to.
func (c *containers) recover() {
	all, err := c.List()
	if err != nil {
		slog.Warn("list containers", "err", err)
		return
	}
	running := map[string]bool{}
	var restart []*Container
	for _, ctr := range all {
		st := c.State(ctr)
		if st.Status != container.StateRunning {
			// A berthd killed right after a create or an end left it.
			_ = c.d.snapshot.Unmount(filepath.Join(c.d.containerDir(ctr.ID), "snap"))
		}
		if st.Status == container.StateCreated {
			continue
		}
		if st.Status == container.StateDead {
			st = c.recordLost(ctr, st)
		}
		if st.Status == container.StateRunning {
			running[ctr.ID] = true
			watch, err := shim.Watch(c.d.containerDir(ctr.ID))
			if err != nil {
				slog.Warn("container's shim is gone: polling its state", "container", ctr.ID, "err", err)
				watch = nil
			}
			go c.monitor(ctr.ID, watch)
			continue
		}
		p := ctr.HostConfig.RestartPolicy.Name
		if p == container.RestartPolicyAlways || (p == container.RestartPolicyUnlessStopped && !ctr.ManuallyStopped) {
			restart = append(restart, ctr)
		}
	}
	// What containers that stopped while berthd was away left on the
	// network goes, before those that restart attach anew.
	if err := c.d.net.Reconcile(func(id string) bool { return running[id] }); err != nil {
		slog.Warn("reconcile the bridge network", "err", err)
	}
	for _, ctr := range restart {
		go func() {
			// Not Start: a stop that came meanwhile (the API serves
			// already) must not be undone.
			if err := c.start(context.Background(), ctr, restoreStart); err != nil {
				slog.Warn("restart at daemon start", "container", ctr.ID, "err", err)
			}
		}()
	}
}

// Rename gives the container a new name, if free.
func (c *containers) Rename(ctr *Container, name string) error {
	if name == "" || !validName.MatchString(name) {
		return invalid(fmt.Errorf("invalid container name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", name))
	}
	name = strings.TrimPrefix(name, "/")
	defer c.lock(ctr.ID)()
	return c.d.db.Update(func(tx *bolt.Tx) error {
		names, ctrs := tx.Bucket(containerNamesBucket), tx.Bucket(containersBucket)
		if id := names.Get([]byte(name)); id != nil {
			if string(id) == ctr.ID {
				return nil
			}
			return nameInUse(name, id)
		}
		v := ctrs.Get([]byte(ctr.ID))
		if v == nil {
			return errdefs.ErrNotFound.WithMessage("No such container: " + ctr.ID)
		}
		var cur Container
		if err := json.Unmarshal(v, &cur); err != nil {
			return err
		}
		if err := names.Delete([]byte(cur.Name)); err != nil {
			return err
		}
		cur.Name = name
		b, err := json.Marshal(&cur)
		if err != nil {
			return err
		}
		if err := names.Put([]byte(name), []byte(cur.ID)); err != nil {
			return err
		}
		return ctrs.Put([]byte(cur.ID), b)
	})
}

// Top lists the container's processes as ps(1) with psArgs (default
// "-ef") shows them, as docker top does: ps runs on the host and only
// the rows of the container's processes are kept.
func (c *containers) Top(ctx context.Context, ctr *Container, psArgs string) ([]string, [][]string, error) {
	pids, err := c.procs(ctr)
	if err != nil {
		return nil, nil, err
	}
	if psArgs == "" {
		psArgs = "-ef"
	}
	out, err := exec.CommandContext(ctx, "ps", strings.Fields(psArgs)...).Output()
	if err != nil {
		return nil, nil, invalid(fmt.Errorf("ps %s: %w", psArgs, err))
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	titles := strings.Fields(lines[0])
	pidCol := slices.Index(titles, "PID")
	if pidCol < 0 {
		return nil, nil, invalid(fmt.Errorf("ps %s: no PID column", psArgs))
	}
	var rows [][]string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) <= pidCol {
			continue
		}
		pid, err := strconv.Atoi(f[pidCol])
		if err != nil || !slices.Contains(pids, pid) {
			continue
		}
		// The last column (the command) may hold spaces.
		if len(f) > len(titles) {
			f = append(f[:len(titles)-1], strings.Join(f[len(titles)-1:], " "))
		}
		rows = append(rows, f)
	}
	return titles, rows, nil
}

// procs are the container's processes, from its cgroup.
func (c *containers) procs(ctr *Container) ([]int, error) {
	if st := c.State(ctr); st.Status != container.StateRunning {
		return nil, notRunning(ctr.ID[:12])
	}
	cg, err := cgroups.Load(c.cgroupPath(ctr.ID))
	if err != nil {
		return nil, err
	}
	return cg.Procs()
}

// Stats reads the container's cgroup usage.
func (c *containers) Stats(ctr *Container) (*cgroups.Stats, error) {
	if st := c.State(ctr); st.Status != container.StateRunning {
		return &cgroups.Stats{}, nil // docker reports zeros for a stopped container
	}
	cg, err := cgroups.Load(c.cgroupPath(ctr.ID))
	if err != nil {
		return nil, err
	}
	return cg.Stats()
}
