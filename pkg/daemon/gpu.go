package daemon

import (
	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/gpu"
)

// GPUsLabel is the label the API shows, in ps and inspect, on a container
// holding GPUs or CDI devices: their IDs, comma-separated. It is not
// stored with the container's own labels.
const GPUsLabel = "berth.gpus"

// GPUHolders maps each GPU or CDI device ID to the containers holding it:
// running ones, and created ones about to run.
func (d *Daemon) GPUHolders() (map[string][]*Container, error) {
	ctrs, err := d.ctrs.List()
	if err != nil {
		return nil, err
	}
	out := map[string][]*Container{}
	for _, ctr := range ctrs {
		if len(ctr.GPUs) == 0 {
			continue
		}
		switch d.ctrs.State(ctr).Status {
		case container.StateExited, container.StateDead, container.StateRemoving:
			continue
		}
		for _, id := range ctr.GPUs {
			out[id] = append(out[id], ctr)
		}
	}
	return out, nil
}

// GPUs lists the machine's GPUs.
func (d *Daemon) GPUs() ([]gpu.GPU, error) { return d.gpus.GPUs() }

// CDISpecDirs are the directories CDI specs are read from.
func (d *Daemon) CDISpecDirs() []string { return d.gpus.SpecDirs() }

// CDIDevices lists the CDI devices by qualified name.
func (d *Daemon) CDIDevices() []string { return d.gpus.CDIDevices() }

// applyGPUs edits spec for the container's GPU and CDI requests and
// records what it holds in ctr.GPUs. The caller holds gpuMu until ctr is
// recorded, so that concurrent creates see each other's GPUs.
func (c *containers) applyGPUs(ctr *Container, req gpu.Request, spec *specs.Spec, rootfs string) error {
	holders, err := c.d.GPUHolders()
	if err != nil {
		return err
	}
	usage := map[string]int{}
	for id, hs := range holders {
		usage[id] = len(hs)
	}
	held, err := c.d.gpus.Apply(spec, req, usage, rootfs)
	if err != nil {
		return invalid(err)
	}
	ctr.GPUs = held
	if req.HasGPUs() && ctr.HostConfig.ShmSize <= 0 {
		setShmSize(spec, gpuShmSize())
	}
	return nil
}

// gpuShmSize is /dev/shm's size in a container with GPUs: half the
// machine's memory, what a tmpfs /dev/shm gets on the host. PyTorch's
// data loaders pass batches through /dev/shm, and Docker's 64 MiB stops
// them ("bus error"); pages used there count against the container's
// memory limit all the same. --shm-size wins.
func gpuShmSize() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return defaultShmSize
	}
	return int64(si.Totalram) * int64(si.Unit) / 2
}
