package daemon

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/pkg/network"
)

// bridged reports whether a container is on the default bridge network:
// Docker's default mode, "default" or "bridge".
func bridged(hc *container.HostConfig) bool {
	switch hc.NetworkMode {
	case "", "default", "bridge":
		return true
	}
	return false
}

// The files a bridged container gets in /etc, in its directory.
var netFiles = []string{"hosts", "hostname", "resolv.conf"}

// bridgeSpec points a bridged container's spec at the network namespace
// the daemon makes at each start, and bind-mounts its /etc files.
func (c *containers) bridgeSpec(ctr *Container, spec *specs.Spec) error {
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			spec.Linux.Namespaces[i].Path = c.d.net.NetnsPath(ctr.ID)
		}
	}
	dir := c.d.containerDir(ctr.ID)
	if err := os.WriteFile(filepath.Join(dir, "hostname"), []byte(ctr.Config.Hostname+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), resolvConf(), 0o644); err != nil {
		return err
	}
	if err := writeHosts(dir, ctr.Config.Hostname, ""); err != nil {
		return err
	}
	for _, f := range netFiles {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/etc/" + f, Type: "bind",
			Source: filepath.Join(dir, f), Options: []string{"rbind", "rprivate"}})
	}
	return nil
}

// writeHosts writes the container's /etc/hosts: localhost, and its own
// name on its address.
func writeHosts(dir, hostname, ip string) error {
	var b bytes.Buffer
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
	if ip != "" {
		fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	}
	return os.WriteFile(filepath.Join(dir, "hosts"), b.Bytes(), 0o644)
}

// resolvConf is the host's resolv.conf for a container, as Docker makes
// it: loopback name servers cannot be reached from the container's
// namespace, so they go, and Google's public servers stand in when none
// is left.
func resolvConf() []byte {
	host, _ := os.ReadFile("/etc/resolv.conf")
	var out bytes.Buffer
	servers := 0
	sc := bufio.NewScanner(bytes.NewReader(host))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.IsLoopback() {
				continue
			}
			servers++
		}
		out.WriteString(line + "\n")
	}
	if servers == 0 {
		out.WriteString("nameserver 8.8.8.8\nnameserver 8.8.4.4\n")
	}
	return out.Bytes()
}

// attach wires a bridged container's network for a start, and writes its
// address into its /etc/hosts.
func (c *containers) attach(ctr *Container) error {
	ports, err := publishedPorts(ctr)
	if err != nil {
		return invalid(err)
	}
	ep, err := c.d.net.Attach(ctr.ID, ports)
	if err != nil {
		return err
	}
	if err := writeHosts(c.d.containerDir(ctr.ID), ctr.Config.Hostname, ep.IP); err != nil {
		c.detach(ctr.ID)
		return err
	}
	return nil
}

// detach undoes attach; a container that is not attached is no error.
func (c *containers) detach(id string) {
	if err := c.d.net.Detach(id); err != nil {
		slog.Warn("detach container from the bridge", "container", id, "err", err)
	}
}

// publishedPorts turns -p (PortBindings) and -P (every exposed port on a
// free host port) into the ports to publish, in a stable order.
func publishedPorts(ctr *Container) ([]network.Port, error) {
	var out []network.Port
	bound := map[string]bool{}
	for port, bindings := range ctr.HostConfig.PortBindings {
		bound[port.String()] = true
		for _, b := range bindings {
			p := network.Port{ContainerPort: int(port.Num()), Proto: string(port.Proto())}
			if b.HostIP.IsValid() && !b.HostIP.IsUnspecified() {
				p.HostIP = b.HostIP.String()
			}
			if b.HostPort != "" {
				n, err := strconv.Atoi(b.HostPort)
				if err != nil || n < 1 || n > 65535 {
					return nil, fmt.Errorf("host port %q of %s: want one port number (ranges are not supported)", b.HostPort, port)
				}
				p.HostPort = n
			}
			out = append(out, p)
		}
	}
	if ctr.HostConfig.PublishAllPorts {
		for port := range ctr.Config.ExposedPorts {
			if !bound[port.String()] {
				out = append(out, network.Port{ContainerPort: int(port.Num()), Proto: string(port.Proto())})
			}
		}
	}
	slices.SortFunc(out, func(a, b network.Port) int {
		if a.ContainerPort != b.ContainerPort {
			return a.ContainerPort - b.ContainerPort
		}
		return strings.Compare(a.Proto+a.HostIP, b.Proto+b.HostIP)
	})
	return out, nil
}

// ContainerEndpoint is a running bridged container's place on the bridge.
func (d *Daemon) ContainerEndpoint(ctr *Container) (*network.Endpoint, bool) {
	return d.net.Endpoint(ctr.ID)
}
