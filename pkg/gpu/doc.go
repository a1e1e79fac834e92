// Package gpu gives containers the GPUs they ask for, and records nothing
// itself: berthd keeps which container holds which GPU.
//
// A request (Docker's DeviceRequests: --gpus, or CDI names from --device)
// becomes edits of the container's OCI spec, applied by the Container
// Device Interface library (tags.cncf.io/container-device-interface):
//
//   - CDI first: specs in the CDI directories (/etc/cdi, /var/run/cdi, or
//     berthd's --cdi-spec-dir) name devices such as nvidia.com/gpu=0, with
//     their nodes, mounts, environment and hooks.
//   - Without a CDI spec for nvidia.com/gpu, the NVIDIA driver is found
//     under a driver root (/ by default): GPUs in /proc/driver/nvidia, device
//     nodes in /dev, user-space libraries in the root's ld cache and tools
//     in its bin directories, selected by NVIDIA_DRIVER_CAPABILITIES as the
//     NVIDIA container toolkit does. The same edits are built for them, plus
//     a createContainer hook that runs the host's ldconfig, chrooted into the
//     container's rootfs with an empty environment, so that CUDA programs
//     find libcuda through the container's own ld cache.
//
// A count (--gpus 2) takes the least used GPUs, given how many containers
// hold each.
package gpu
