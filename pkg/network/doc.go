// Package network gives containers the default bridge network: a bridge
// with the gateway address, and per container a network namespace pinned
// under the daemon's root, a veth pair into the bridge, an address from a
// persisted allocation, a default route, outbound NAT and published ports.
//
// Namespaces are made by the daemon, not by the container's init, as CNI
// and Podman do: the namespace lives from the container's start to its
// stop, whatever the container's processes do, and the daemon wires it
// before the container exists. Deleting the namespace deletes the veth
// pair with it.
//
// Published ports are iptables DNAT rules (PREROUTING for other hosts,
// OUTPUT for the host itself, with route_localnet on the bridge so that
// 127.0.0.1 works), so traffic never passes through a proxy process and
// keeps flowing while berthd restarts. Every rule carries a comment
// naming the bridge and the container, so that what a crash left is found
// and removed at the next start.
package network
