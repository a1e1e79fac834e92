package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/pkg/network"
	"github.com/berth-containers/berth/pkg/runtime"
)

// bridged reports whether a container is on a bridge network: the
// default one (Docker's default mode, "default" or "bridge") or one a
// user made, named by its mode.
func bridged(hc *container.HostConfig) bool {
	m := string(hc.NetworkMode)
	return m != "none" && m != "host" && !strings.HasPrefix(m, "container:")
}

// networkOf is the name of a bridged container's network.
func networkOf(hc *container.HostConfig) string {
	switch m := string(hc.NetworkMode); m {
	case "", "default", network.DefaultNetwork:
		return network.DefaultNetwork
	default:
		return m
	}
}

// The files a bridged container gets in /etc, in its directory.
var netFiles = []string{"hosts", "hostname", "resolv.conf"}

// bridgeSpec points a bridged container's spec at the network namespace
// the daemon makes at each start, and bind-mounts its /etc files.
func (c *containers) bridgeSpec(ctr *Container, spec *specs.Spec) error {
	joinNetns(spec, c.d.net.NetnsPath(ctr.ID))
	dir := c.d.containerDir(ctr.ID)
	if err := writeNetFiles(dir, ctr.Config.Hostname, ""); err != nil {
		return err
	}
	mountNetFiles(spec, dir)
	return nil
}

// joinNetns makes the spec's network namespace the one pinned at path.
func joinNetns(spec *specs.Spec, path string) {
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			spec.Linux.Namespaces[i].Path = path
		}
	}
}

// mountNetFiles bind-mounts the /etc files in dir over the container's,
// in place of any mounted before; dir "" mounts none.
func mountNetFiles(spec *specs.Spec, dir string) {
	spec.Mounts = slices.DeleteFunc(spec.Mounts, func(m specs.Mount) bool {
		return slices.Contains(netFiles, strings.TrimPrefix(m.Destination, "/etc/"))
	})
	if dir == "" {
		return
	}
	for _, f := range netFiles {
		spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/etc/" + f, Type: "bind",
			Source: filepath.Join(dir, f), Options: []string{"rbind", "rprivate"}})
	}
}

// writeNetFiles writes a container's /etc/hostname, /etc/resolv.conf and
// /etc/hosts (with its own name on ip, if known) into dir.
func writeNetFiles(dir, hostname, ip string) error {
	if err := os.WriteFile(filepath.Join(dir, "hostname"), []byte(hostname+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), resolvConf(), 0o644); err != nil {
		return err
	}
	hosts := hostsHeader
	if ip != "" {
		hosts += ip + "\t" + hostname + "\n"
	}
	return os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts), 0o644)
}

const hostsHeader = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
	"fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"

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

// attach wires a bridged container's network for a start: the network
// it runs on, then those connected to it; and writes its /etc/hosts and
// those of the containers that now find it by name.
func (c *containers) attach(ctr *Container) error {
	ports, err := publishedPorts(ctr)
	if err != nil {
		return invalid(err)
	}
	ep, err := c.d.net.Attach(ctr.ID, networkOf(ctr.HostConfig), ports)
	if err != nil {
		return err
	}
	for _, n := range ctr.Networks {
		if _, err := c.d.net.Connect(ctr.ID, n); err != nil {
			c.detach(ctr.ID)
			return fmt.Errorf("connect to network %s: %w", n, err)
		}
	}
	if err := c.refreshHosts(ctr.ID, append([]string{ep.Network}, ctr.Networks...)...); err != nil {
		c.detach(ctr.ID)
		return err
	}
	return nil
}

// detach undoes attach; a container that is not attached is no error.
func (c *containers) detach(id string) {
	var nets []string
	for _, ep := range c.d.net.ContainerEndpoints(id) {
		nets = append(nets, ep.Network)
	}
	if err := c.d.net.Detach(id); err != nil {
		slog.Warn("detach container from the network", "container", id, "err", err)
	}
	_ = c.refreshHosts("", nets...)
}

// refreshHosts rewrites the /etc/hosts of container self (unless "") and
// of every container on the given users' networks, each once, so that
// each finds the others by name, as Docker's embedded DNS answers them.
// The files are rewritten in place: containers see them through a bind
// mount of the same inode. The default network, as Docker's, resolves no
// names. Only self's failure is returned; the others' are logged.
func (c *containers) refreshHosts(self string, nets ...string) error {
	done := map[string]bool{}
	if self != "" {
		if err := c.writeHostsOf(self); err != nil {
			return err
		}
		done[self] = true
	}
	for _, n := range nets {
		if n == network.DefaultNetwork {
			continue
		}
		for _, ep := range c.d.net.Endpoints(n) {
			if done[ep.ID] {
				continue
			}
			done[ep.ID] = true
			if err := c.writeHostsOf(ep.ID); err != nil {
				slog.Warn("write /etc/hosts", "container", ep.ID, "err", err)
			}
		}
	}
	return nil
}

// writeHostsOf writes a container's /etc/hosts: its own address on the
// default network, and every member of each user network it is on.
func (c *containers) writeHostsOf(id string) error {
	ctr, err := c.Get(id)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(hostsHeader)
	seen := map[string]bool{}
	line := func(ip, names string) {
		if l := ip + "\t" + names + "\n"; !seen[l] {
			seen[l] = true
			b.WriteString(l)
		}
	}
	for _, ep := range c.d.net.ContainerEndpoints(id) {
		if ep.Network == network.DefaultNetwork {
			line(ep.IP, ctr.Config.Hostname)
			continue
		}
		for _, m := range c.d.net.Endpoints(ep.Network) {
			if other, err := c.Get(m.ID); err == nil {
				line(m.IP, hostNames(other))
			}
		}
	}
	return os.WriteFile(filepath.Join(c.d.containerDir(id), "hosts"), b.Bytes(), 0o644)
}

// hostNames are the names a container answers to on a user's network.
func hostNames(ctr *Container) string {
	names := ctr.Name
	if h := ctr.Config.Hostname; h != "" && h != ctr.Name {
		names += " " + h
	}
	if h := ctr.ID[:12]; h != ctr.Config.Hostname {
		names += " " + h
	}
	return names
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
				lo, hi, isRange := strings.Cut(b.HostPort, "-")
				n, err := strconv.Atoi(lo)
				m := n
				if isRange {
					m, err = strconv.Atoi(hi)
				}
				if err != nil || n < 1 || m > 65535 || m < n {
					return nil, fmt.Errorf("host port %q of %s: want a port number or a range such as 8000-8010", b.HostPort, port)
				}
				p.HostPort = n
				if isRange {
					p.HostPortEnd = m
				}
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

// Networks are the bridge networks: the default one and the user's.
func (d *Daemon) Networks() []*network.Network { return d.net.Networks() }

// Network finds a bridge network by name or ID.
func (d *Daemon) Network(ref string) (*network.Network, error) { return d.net.Network(ref) }

// NetworkCreate makes a user's bridge network.
func (d *Daemon) NetworkCreate(name, subnet string, labels map[string]string) (*network.Network, error) {
	return d.net.CreateNetwork(name, subnet, labels)
}

// NetworkRemove removes a user's network that no container is on.
func (d *Daemon) NetworkRemove(ref string) error { return d.net.RemoveNetwork(ref) }

// NetworkEndpoints are the running containers' endpoints on a network.
func (d *Daemon) NetworkEndpoints(name string) []*network.Endpoint { return d.net.Endpoints(name) }

// joinNetwork points the spec of a container in network mode
// container:TARGET at TARGET's network namespace, which must be running,
// and at its /etc files; written at each start, as TARGET's namespace is
// new at each of its starts.
func (c *containers) joinNetwork(ctr *Container, target string) error {
	t, err := c.Get(target)
	if err != nil {
		return err
	}
	st := c.State(t)
	if st.Status != container.StateRunning {
		return fmt.Errorf("cannot join network of a non running container: %s: %w", target, errdefs.ErrConflict)
	}
	nsPath := fmt.Sprintf("/proc/%d/ns/net", st.Pid)
	if bridged(t.HostConfig) {
		nsPath = c.d.net.NetnsPath(t.ID)
	}
	bundle := filepath.Join(c.d.containerDir(ctr.ID), "bundle")
	spec, err := runtime.LoadSpec(bundle)
	if err != nil {
		return err
	}
	joinNetns(spec, nsPath)
	filesDir := ""
	if bridged(t.HostConfig) {
		filesDir = c.d.containerDir(t.ID)
	}
	mountNetFiles(spec, filesDir)
	b, err := json.Marshal(spec) // read by the runtime, not by people: compact, 62% of the indented size
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600)
}

// NetworkConnect connects a container to a user's network: now, if it
// runs, and at each later start.
func (d *Daemon) NetworkConnect(ctr *Container, netName string) error {
	return d.changeNetworks(ctr, netName, func(cur *Container, n *network.Network, running bool) error {
		if !bridged(cur.HostConfig) {
			return invalid(fmt.Errorf("container %s is on network %q: it cannot be connected to others", cur.Name, cur.HostConfig.NetworkMode))
		}
		if n.Name == networkOf(cur.HostConfig) || slices.Contains(cur.Networks, n.Name) {
			return fmt.Errorf("endpoint with name %s already exists in network %s: %w", cur.Name, n.Name, errdefs.ErrConflict)
		}
		if running {
			if _, err := d.net.Connect(cur.ID, n.Name); err != nil {
				return err
			}
		}
		cur.Networks = append(cur.Networks, n.Name)
		if err := d.ctrs.save(cur); err != nil {
			_ = d.net.Disconnect(cur.ID, n.Name)
			return err
		}
		return nil
	})
}

// NetworkDisconnect disconnects a container from a network it was
// connected to.
func (d *Daemon) NetworkDisconnect(ctr *Container, netName string) error {
	return d.changeNetworks(ctr, netName, func(cur *Container, n *network.Network, running bool) error {
		if n.Name == networkOf(cur.HostConfig) && bridged(cur.HostConfig) {
			return fmt.Errorf("container %s runs on network %s: run it on another to leave this one: %w", cur.Name, n.Name, errdefs.ErrConflict)
		}
		i := slices.Index(cur.Networks, n.Name)
		if i < 0 {
			return fmt.Errorf("container %s is not connected to network %s: %w", cur.Name, n.Name, errdefs.ErrNotFound)
		}
		if running {
			if err := d.net.Disconnect(cur.ID, n.Name); err != nil {
				return err
			}
		}
		cur.Networks = slices.Delete(cur.Networks, i, i+1)
		return d.ctrs.save(cur)
	})
}

// changeNetworks runs change on the container's current record and the
// network, under the container's lock, then rewrites the /etc/hosts of
// the network's members and the container's own.
func (d *Daemon) changeNetworks(ctr *Container, netName string, change func(cur *Container, n *network.Network, running bool) error) error {
	defer d.ctrs.lock(ctr.ID)()
	cur, err := d.ctrs.Get(ctr.ID)
	if err != nil {
		return err
	}
	n, err := d.net.Network(netName)
	if err != nil {
		return err
	}
	running := d.ctrs.State(cur).Status == container.StateRunning
	if err := change(cur, n, running); err != nil {
		return err
	}
	self := ""
	if running {
		self = cur.ID
	}
	if err := d.ctrs.refreshHosts(self, n.Name); err != nil {
		slog.Warn("write /etc/hosts", "container", cur.ID, "err", err)
	}
	return nil
}

// ContainerEndpoints are all of a running container's endpoints.
func (d *Daemon) ContainerEndpoints(ctr *Container) []*network.Endpoint {
	return d.net.ContainerEndpoints(ctr.ID)
}

// NetworksPrune removes the user's networks that no container, running
// or not, is on or connected to, and returns their names.
func (d *Daemon) NetworksPrune() ([]string, error) {
	ctrs, err := d.ctrs.List()
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, ctr := range ctrs {
		used[networkOf(ctr.HostConfig)] = true
		for _, n := range ctr.Networks {
			used[n] = true
		}
	}
	var removed []string
	for _, n := range d.net.Networks() {
		if n.Name == network.DefaultNetwork || used[n.Name] || len(d.net.Endpoints(n.Name)) > 0 {
			continue
		}
		if err := d.net.RemoveNetwork(n.ID); err != nil {
			return removed, err
		}
		removed = append(removed, n.Name)
	}
	return removed, nil
}
