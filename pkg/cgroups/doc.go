// Package cgroups places a container's processes in a cgroup and applies the
// limits of an OCI spec's linux.resources section to it.
//
// It is a thin layer over github.com/containerd/cgroups/v3 that picks the
// right driver for the host:
//
//	legacy (v1 only)   -> cgroup1, one directory per mounted controller
//	hybrid (v1 + v2)   -> cgroup1 as well: controllers that are bound to v1
//	                      are the only ones that can limit anything; the
//	                      unified hierarchy (often holding just hugetlb, or
//	                      nothing) is left alone. crun 1.8 refuses such hosts.
//	unified (v2 only)  -> cgroup2, one directory, eBPF device filter
//
// Besides limits it reports usage (Stats) and whether the kernel's OOM killer
// ended a process in the group (OOMKilled), which the runtime puts in the
// container's state.
package cgroups
