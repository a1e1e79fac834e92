package gpu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
)

// Sources of GPUs.
const (
	SourceCDI    = "cdi"
	SourceNvidia = "nvidia"
)

// cdiGPUClass is the CDI kind whose devices are GPUs (nvidia-ctk's).
const cdiGPUClass = "nvidia.com/gpu"

// Config says where GPUs are found.
type Config struct {
	// CDISpecDirs replace the default CDI directories (/etc/cdi, /var/run/cdi).
	CDISpecDirs []string
	// DriverRoot is where the NVIDIA driver's files are ("/" when empty).
	DriverRoot string
}

// Manager finds GPUs and edits the specs of containers that ask for them.
type Manager struct {
	root     string
	cache    *cdi.Cache
	ldconfig string
}

// New loads the CDI specs. Specs that do not parse are reported in the
// error but do not stop the Manager, which still serves the others.
func New(cfg Config) (*Manager, error) {
	dirs := cfg.CDISpecDirs
	if len(dirs) == 0 {
		dirs = cdi.DefaultSpecDirs
	}
	m := &Manager{root: cfg.DriverRoot, ldconfig: hostLdconfig()}
	if m.root == "" {
		m.root = "/"
	}
	var err error
	// Auto-refresh: a spec written by nvidia-ctk after berthd started is seen.
	m.cache, err = cdi.NewCache(cdi.WithSpecDirs(dirs...), cdi.WithAutoRefresh(true))
	if m.cache == nil {
		return nil, fmt.Errorf("CDI: %w", err)
	}
	if err != nil {
		return m, fmt.Errorf("CDI specs: %w", err)
	}
	return m, nil
}

// SpecDirs are the CDI directories read.
func (m *Manager) SpecDirs() []string { return m.cache.GetSpecDirectories() }

// CDIDevices lists every CDI device's qualified name.
func (m *Manager) CDIDevices() []string { return m.cache.ListDevices() }

// hostLdconfig is the host's ldconfig; on Ubuntu /sbin/ldconfig is a
// script around ldconfig.real.
func hostLdconfig() string {
	for _, p := range []string{"/sbin/ldconfig.real", "/sbin/ldconfig", "/usr/sbin/ldconfig"} {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	return ""
}

// GPU is one GPU containers can hold.
type GPU struct {
	// ID is what a holder records: the CDI name, or the UUID.
	ID     string `json:"ID"`
	Index  int    `json:"Index"`
	UUID   string `json:"UUID,omitempty"`
	Model  string `json:"Model,omitempty"`
	Source string `json:"Source"`
}

// GPUs lists the machine's GPUs: the CDI spec's for nvidia.com/gpu where
// there is one, else the driver's.
func (m *Manager) GPUs() ([]GPU, error) {
	gpus, _, err := m.inventory()
	return gpus, err
}

// inventory is GPUs, with the driver they were found in (nil for CDI's).
func (m *Manager) inventory() ([]GPU, *driver, error) {
	if gpus := m.cdiGPUs(); len(gpus) > 0 {
		return gpus, nil, nil
	}
	d, err := discover(m.root)
	if err != nil {
		return nil, nil, err
	}
	out := make([]GPU, len(d.gpus))
	for i, g := range d.gpus {
		out[i] = GPU{ID: g.UUID, Index: g.Index, UUID: g.UUID, Model: g.Model, Source: SourceNvidia}
	}
	return out, d, nil
}

// cdiGPUs are the CDI spec's GPUs by index name ("0", "1"; nvidia-ctk's
// default), or by every name but "all" where none is an index.
func (m *Manager) cdiGPUs() []GPU {
	var byIndex, other []GPU
	for _, name := range m.cache.ListDevices() {
		kind, dev, ok := strings.Cut(name, "=")
		if !ok || kind != cdiGPUClass || dev == "all" {
			continue
		}
		g := GPU{ID: name, Index: -1, Source: SourceCDI}
		if strings.HasPrefix(dev, "GPU-") {
			g.UUID = dev
		}
		if n, err := strconv.Atoi(dev); err == nil {
			g.Index = n
			byIndex = append(byIndex, g)
		} else {
			other = append(other, g)
		}
	}
	if len(byIndex) > 0 {
		slices.SortFunc(byIndex, func(a, b GPU) int { return a.Index - b.Index })
		return byIndex
	}
	for i := range other {
		other[i].Index = i
	}
	return other
}

// Request is what one container asks for.
type Request struct {
	// Count GPUs (-1: all), or the GPUs named in IDs (index or UUID).
	Count int
	IDs   []string
	// Capabilities are NVIDIA driver capabilities the request names (they
	// replace NVIDIA_DRIVER_CAPABILITIES).
	Capabilities []string
	// CDI are qualified CDI device names (vendor.com/class=name).
	CDI []string
}

// Empty reports whether nothing is asked for.
func (r Request) Empty() bool { return r.Count == 0 && len(r.IDs) == 0 && len(r.CDI) == 0 }

// wantsGPUs reports whether --gpus asks for GPUs.
func (r Request) wantsGPUs() bool { return r.Count != 0 || len(r.IDs) > 0 }

// HasGPUs reports whether GPUs are asked for, by --gpus or as CDI devices
// of a GPU class (nvidia.com/gpu=0).
func (r Request) HasGPUs() bool {
	return r.wantsGPUs() || slices.ContainsFunc(r.CDI, func(name string) bool {
		kind, _, _ := strings.Cut(name, "=")
		return strings.HasSuffix(kind, "/gpu")
	})
}

// nvidiaDriverCaps can be asked of the nvidia driver, as Docker registers it.
var nvidiaDriverCaps = append([]string{"gpu", "nvidia"}, allCapabilities...)

// ParseRequests reads Docker's DeviceRequests (--gpus: driver "" or
// "nvidia" with capability "gpu"; driver "cdi" with CDI names) and
// --device values that are CDI names.
func ParseRequests(reqs []container.DeviceRequest, devices []container.DeviceMapping) (Request, error) {
	var r Request
	for _, d := range devices {
		if parser.IsQualifiedName(d.PathOnHost) {
			r.CDI = append(r.CDI, d.PathOnHost)
		}
	}
	for _, dr := range reqs {
		switch dr.Driver {
		case "cdi":
			for _, id := range dr.DeviceIDs {
				if !parser.IsQualifiedName(id) {
					return r, fmt.Errorf("CDI device %q: want vendor.com/class=name", id)
				}
				r.CDI = append(r.CDI, id)
			}
			continue
		case "", "nvidia":
		default:
			return r, fmt.Errorf("could not select device driver %q with capabilities: %v", dr.Driver, dr.Capabilities)
		}
		caps, ok := matchCapabilities(dr.Capabilities)
		if !ok {
			return r, fmt.Errorf("could not select device driver %q with capabilities: %v", dr.Driver, dr.Capabilities)
		}
		if dr.Count != 0 && len(dr.DeviceIDs) > 0 {
			return r, errors.New("cannot set both Count and DeviceIDs on device request")
		}
		if r.wantsGPUs() {
			return r, errors.New("one GPU request at a time (--gpus once)")
		}
		r.Count, r.IDs = dr.Count, slices.Clone(dr.DeviceIDs)
		for _, c := range caps {
			if slices.Contains(allCapabilities, c) {
				r.Capabilities = append(r.Capabilities, c)
			}
		}
	}
	return r, nil
}

// matchCapabilities picks the first set of capabilities (Docker's
// DeviceRequest: any one set, all of its members) the nvidia driver has.
func matchCapabilities(sets [][]string) ([]string, bool) {
	if len(sets) == 0 {
		return nil, true
	}
	for _, set := range sets {
		if !slices.ContainsFunc(set, func(c string) bool { return !slices.Contains(nvidiaDriverCaps, c) }) {
			return set, true
		}
	}
	return nil, false
}

// Apply edits s, the spec of a container whose root filesystem is
// mounted at rootfs, for req. usage counts the containers holding each
// GPU ID; a count takes the least used. It returns the IDs of the GPUs
// and CDI devices the container holds.
func (m *Manager) Apply(s *specs.Spec, req Request, usage map[string]int, rootfs string) ([]string, error) {
	var held []string
	if req.wantsGPUs() {
		gpus, d, err := m.inventory()
		if err != nil {
			return nil, err
		}
		picked, err := pick(gpus, req, usage)
		if err != nil {
			return nil, err
		}
		if err := m.applyGPUs(s, d, picked, req, rootfs); err != nil {
			return nil, err
		}
		for _, g := range picked {
			held = append(held, g.ID)
		}
	}
	if len(req.CDI) > 0 {
		if _, err := m.cache.InjectDevices(s, req.CDI...); err != nil {
			return nil, fmt.Errorf("CDI: %w (specs are read from %s)", err, strings.Join(m.SpecDirs(), ", "))
		}
		held = append(held, req.CDI...)
	}
	return held, nil
}

// pick chooses the GPUs req names, or its count of the least used ones.
func pick(gpus []GPU, req Request, usage map[string]int) ([]GPU, error) {
	if len(gpus) == 0 {
		return nil, errors.New(`could not select device driver "" with capabilities: [[gpu]]: no GPU found (no CDI spec for nvidia.com/gpu, and no NVIDIA driver)`)
	}
	if len(req.IDs) > 0 {
		var out []GPU
		for _, id := range req.IDs {
			i := slices.IndexFunc(gpus, func(g GPU) bool {
				return id == strconv.Itoa(g.Index) || (g.UUID != "" && id == g.UUID) || id == g.ID
			})
			if i < 0 {
				return nil, fmt.Errorf("no GPU %q: this machine has %s", id, describe(gpus))
			}
			if !slices.ContainsFunc(out, func(g GPU) bool { return g.ID == gpus[i].ID }) {
				out = append(out, gpus[i])
			}
		}
		return out, nil
	}
	if req.Count < 0 {
		return gpus, nil
	}
	if req.Count > len(gpus) {
		return nil, fmt.Errorf("%d GPUs asked for: this machine has %d (%s)", req.Count, len(gpus), describe(gpus))
	}
	order := slices.Clone(gpus)
	slices.SortStableFunc(order, func(a, b GPU) int { return usage[a.ID] - usage[b.ID] })
	out := order[:req.Count]
	slices.SortFunc(out, func(a, b GPU) int { return a.Index - b.Index })
	return out, nil
}

func describe(gpus []GPU) string {
	var s []string
	for _, g := range gpus {
		d := strconv.Itoa(g.Index)
		if g.UUID != "" {
			d += " (" + g.UUID + ")"
		}
		s = append(s, d)
	}
	return strings.Join(s, ", ")
}

// applyGPUs gives the container the picked GPUs: CDI's, or those of d,
// the driver they were found in.
func (m *Manager) applyGPUs(s *specs.Spec, d *driver, picked []GPU, req Request, rootfs string) error {
	if d == nil {
		names := make([]string, len(picked))
		for i, g := range picked {
			names[i] = g.ID
		}
		if _, err := m.cache.InjectDevices(s, names...); err != nil {
			return fmt.Errorf("CDI: %w", err)
		}
		return nil
	}
	gpus := make([]nvidiaGPU, len(picked))
	uuids := make([]string, len(picked))
	for i, p := range picked {
		gpus[i], uuids[i] = d.gpus[p.Index], p.UUID // Index is the position in d.gpus
	}
	caps := req.Capabilities
	if len(caps) == 0 {
		var err error
		if caps, err = driverCapabilities(s.Process.Env); err != nil {
			return err
		}
	}
	ldconfig := m.ldconfig
	if !takesLDCache(s, rootfs) {
		ldconfig = ""
	}
	e, err := d.edits(gpus, caps, ldconfig, rootfs)
	if err != nil {
		return err
	}
	// What the container holds, whatever its image says: an image's
	// NVIDIA_VISIBLE_DEVICES never widens the request.
	e.Env = []string{"NVIDIA_VISIBLE_DEVICES=" + strings.Join(uuids, ","),
		"NVIDIA_DRIVER_CAPABILITIES=" + strings.Join(caps, ",")}
	return (&cdi.ContainerEdits{ContainerEdits: e}).Apply(s)
}

// takesLDCache reports whether ldconfig can write the container's ld
// cache: a writable rootfs with a real /etc directory (an image without
// one, busybox's or scratch's, has no dynamic loader to read it).
func takesLDCache(s *specs.Spec, rootfs string) bool {
	if s.Root != nil && s.Root.Readonly {
		return false
	}
	fi, err := os.Lstat(rootfs + "/etc")
	return err == nil && fi.IsDir()
}
