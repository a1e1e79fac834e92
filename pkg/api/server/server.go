package server

import (
	"strconv"

	"github.com/moby/moby/api/types/events"
	digest "github.com/opencontainers/go-digest"

	"github.com/berth-containers/berth/pkg/daemon"
	"github.com/berth-containers/berth/pkg/gpu"
	"github.com/berth-containers/berth/pkg/image"
	"github.com/berth-containers/berth/pkg/image/registry"
)

// Backend is what the API serves; pkg/daemon provides it.
type Backend interface {
	// GPUs, CDISpecDirs and CDIDevices are the machine's devices, for /info.
	GPUs() ([]gpu.GPU, error)
	CDISpecDirs() []string
	CDIDevices() []string
	Images() *image.Store
	Registry() *registry.Client
	// Root is the daemon's data directory, for /info.
	Root() string
	// StorageDriver names the snapshot driver, for /info.
	StorageDriver() string
	// ImageInUse reports whether a container uses the image.
	ImageInUse(id digest.Digest) bool
	ContainerBackend
	ExecBackend
	StatsBackend
	BuildBackend
	NetworkBackend
	// OnContainerExit sets the function told of every container's end.
	OnContainerExit(fn func(*daemon.Container, daemon.ContainerState))
}

// Server serves the API for one backend.
type Server struct {
	b             Backend
	daemonVersion string
	eventBus      *Events
}

// New returns a server for b, reporting version as the daemon's.
func New(b Backend, version string) *Server {
	s := &Server{b: b, daemonVersion: version, eventBus: NewEvents()}
	b.OnContainerExit(func(ctr *daemon.Container, st daemon.ContainerState) {
		s.eventBus.Publish(events.ContainerEventType, "die", ctr.ID,
			map[string]string{"name": ctr.Name, "image": ctr.ImageRef, "exitCode": strconv.Itoa(st.ExitCode)})
	})
	return s
}

// imageEvent publishes an image event, naming the image as docker does.
func (s *Server) imageEvent(action events.Action, id, name string) {
	s.eventBus.Publish(events.ImageEventType, action, id, map[string]string{"name": name})
}

func (s *Server) inUse(id digest.Digest) bool { return s.b.ImageInUse(id) }
