package network

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Config is the default bridge network and where state goes.
type Config struct {
	Bridge   string // link name of the default network (at most 15 bytes)
	Gateway  string // its address with the subnet's prefix: "10.89.0.1/16"
	StateDir string // where network namespaces are pinned, one file per container
	DB       *bolt.DB
}

// DefaultNetwork is the name of the default bridge network, as Docker's.
const DefaultNetwork = "bridge"

// Network is a bridge network: the default one, or one a user made.
type Network struct {
	Name    string            `json:"name"`
	ID      string            `json:"id"`
	Bridge  string            `json:"bridge"`
	Gateway string            `json:"gateway"` // "10.90.0.1/24"
	Created time.Time         `json:"created"`
	Labels  map[string]string `json:"labels,omitempty"`
}

func (n *Network) prefix() netip.Prefix {
	p, _ := netip.ParsePrefix(n.Gateway)
	return p
}

func (n *Network) gateway() netip.Addr { return n.prefix().Addr() }

// Subnet is the network's subnet: "10.90.0.0/24".
func (n *Network) Subnet() string { return n.prefix().Masked().String() }

// GatewayIP is the bridge's address: "10.90.0.1".
func (n *Network) GatewayIP() string { return n.gateway().String() }

// Port is a published port.
type Port struct {
	HostIP        string `json:"hostIP,omitempty"`      // "" for every address
	HostPort      int    `json:"hostPort"`              // 0: any free port, chosen at Attach
	HostPortEnd   int    `json:"hostPortEnd,omitempty"` // with HostPort, a range to choose a free one from
	ContainerPort int    `json:"containerPort"`
	Proto         string `json:"proto"` // tcp or udp
}

func (p Port) String() string {
	ip := p.HostIP
	if ip == "" {
		ip = "0.0.0.0"
	}
	return fmt.Sprintf("%s:%d->%d/%s", ip, p.HostPort, p.ContainerPort, p.Proto)
}

// Endpoint is a container's place on a network.
type Endpoint struct {
	ID       string `json:"id"`
	Network  string `json:"network"`
	Bridge   string `json:"bridge"`
	IP       string `json:"ip"`
	Prefix   int    `json:"prefix"`
	Gateway  string `json:"gateway"`
	MAC      string `json:"mac"`
	HostVeth string `json:"hostVeth"`
	// Interface is the link in the container: eth0 on the network it was
	// started on (its default route, its published ports), eth1... on the
	// networks connected to it after.
	Interface string `json:"interface"`
	Ports     []Port `json:"ports,omitempty"`
}

// key is the endpoint's key in the endpoints bucket.
func (ep *Endpoint) key() []byte { return []byte(ep.ID + "/" + ep.Network) }

// hostVeth names the host end of a container's link into a network.
func hostVeth(id, netName string) string {
	if netName == DefaultNetwork {
		return "veth" + id[:10]
	}
	return fmt.Sprintf("veth%x", sha256sum(id+"/"+netName))[:14]
}

// Manager wires containers into bridge networks.
type Manager struct {
	cfg Config
	def *Network
	ipt *iptables.IPTables
	mu  sync.Mutex // one change of the networks at a time
	// ready: bridges set up (link, address, sysctls, rules) by this
	// daemon; later Attaches only check that the link is still there.
	ready map[string]bool
}

var (
	endpointsBucket = []byte("endpoints") // container ID -> Endpoint (JSON)
	networksBucket  = []byte("networks")  // name -> Network (JSON), the user's
)

// New checks the configuration; nothing is made on the host until a
// container attaches.
func New(cfg Config) (*Manager, error) {
	gw, err := netip.ParsePrefix(cfg.Gateway)
	if err != nil || !gw.Addr().Is4() || gw.Bits() > 30 || gw.Bits() < 8 {
		return nil, fmt.Errorf("bridge address %q: want an IPv4 address with a prefix of 8 to 30 bits, such as 10.89.0.1/16", cfg.Gateway)
	}
	if cfg.Bridge == "" || len(cfg.Bridge) > 15 {
		return nil, fmt.Errorf("bridge name %q: want 1 to 15 characters", cfg.Bridge)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	err = cfg.DB.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{endpointsBucket, networksBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	def := &Network{Name: DefaultNetwork, ID: fmt.Sprintf("%x", sha256sum(DefaultNetwork+" "+cfg.Bridge)), Bridge: cfg.Bridge, Gateway: cfg.Gateway}
	return &Manager{cfg: cfg, def: def, ready: map[string]bool{}}, nil
}

// NetnsPath is where a container's network namespace is pinned.
func (m *Manager) NetnsPath(id string) string { return filepath.Join(m.cfg.StateDir, id) }

// Attach gives container id its network on the network named netName: a
// namespace at NetnsPath(id), a veth pair into the bridge with a free
// address, a default route, and the ports published. On error nothing of
// it is left.
func (m *Manager) Attach(id, netName string, ports []Port) (_ *Endpoint, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.Network(netName)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = m.detach(id)
		}
	}()
	if err := m.ensureBridge(n); err != nil {
		return nil, err
	}
	ep := &Endpoint{ID: id, Network: n.Name, Bridge: n.Bridge, Prefix: n.prefix().Bits(), Gateway: n.GatewayIP(),
		HostVeth: hostVeth(id, n.Name), Interface: "eth0"}
	if ep.Ports, err = m.checkPorts(id, ports); err != nil {
		return nil, err
	}
	// Recorded first: an address is taken, and a crash from here on is
	// undone at the next start.
	if err := m.allocate(n, ep); err != nil {
		return nil, err
	}
	if err := newNetns(m.NetnsPath(id)); err != nil {
		return nil, fmt.Errorf("make network namespace: %w", err)
	}
	if ep.MAC, err = m.wire(n, ep); err != nil {
		return nil, err
	}
	for _, p := range ep.Ports {
		if err := m.portRules(ep, p, true); err != nil {
			return nil, fmt.Errorf("publish %s: %w", p, err)
		}
	}
	return ep, m.save(ep)
}

// Connect adds a running container (attached already) to another
// network: a link ethN with an address on it, no default route.
func (m *Manager) Connect(id, netName string) (_ *Endpoint, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.Network(netName)
	if err != nil {
		return nil, err
	}
	eps := m.ContainerEndpoints(id)
	if len(eps) == 0 {
		return nil, fmt.Errorf("the container is not running on a bridge network: %w", errdefs.ErrConflict)
	}
	for _, ep := range eps {
		if ep.Network == n.Name {
			return nil, fmt.Errorf("endpoint with name %s already exists in network %s: %w", id[:12], n.Name, errdefs.ErrConflict)
		}
	}
	ep := &Endpoint{ID: id, Network: n.Name, Bridge: n.Bridge, Prefix: n.prefix().Bits(), Gateway: n.GatewayIP(),
		HostVeth: hostVeth(id, n.Name), Interface: fmt.Sprintf("eth%d", nextInterface(eps))}
	if err := m.ensureBridge(n); err != nil {
		return nil, err
	}
	if err := m.allocate(n, ep); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.unlink(ep)
		}
	}()
	if ep.MAC, err = m.wire(n, ep); err != nil {
		return nil, err
	}
	return ep, m.save(ep)
}

func nextInterface(eps []*Endpoint) int {
	used := map[string]bool{}
	for _, ep := range eps {
		used[ep.Interface] = true
	}
	i := 0
	for used[fmt.Sprintf("eth%d", i)] {
		i++
	}
	return i
}

// Disconnect removes a container's link into a network it was connected
// to; the network it started on stays until it stops.
func (m *Manager) Disconnect(id, netName string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.Network(netName)
	if err != nil {
		return err
	}
	for _, ep := range m.ContainerEndpoints(id) {
		if ep.Network != n.Name {
			continue
		}
		if ep.Interface == "eth0" {
			return fmt.Errorf("container %s runs on network %s: it leaves it when it stops: %w", id[:12], n.Name, errdefs.ErrConflict)
		}
		return m.unlink(ep)
	}
	return fmt.Errorf("container %s is not connected to network %s: %w", id[:12], n.Name, errdefs.ErrNotFound)
}

// unlink deletes one endpoint's veth pair and record.
func (m *Manager) unlink(ep *Endpoint) error {
	var errs []error
	if l, err := netlink.LinkByName(ep.HostVeth); err == nil {
		errs = append(errs, netlink.LinkDel(l))
	}
	errs = append(errs, m.cfg.DB.Update(func(tx *bolt.Tx) error { return tx.Bucket(endpointsBucket).Delete(ep.key()) }))
	return errors.Join(errs...)
}

// Detach removes what Attach made for container id; what is gone already
// is no error.
func (m *Manager) Detach(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.detach(id)
}

func (m *Manager) detach(id string) error {
	var errs []error
	eps := m.ContainerEndpoints(id)
	for _, ep := range eps {
		for _, p := range ep.Ports {
			errs = append(errs, m.portRules(ep, p, false))
		}
	}
	// The namespace's end goes with the namespace, and the host end with
	// it, in the kernel's own time: deleting a link waits for RCU grace
	// periods, tens of milliseconds that a container's stop need not wait.
	errs = append(errs, deleteNetns(m.NetnsPath(id)))
	// A container with no endpoint (--network none, or detached already)
	// costs no write transaction: each is two fdatasyncs.
	if len(eps) > 0 {
		errs = append(errs, m.cfg.DB.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(endpointsBucket)
			for _, ep := range eps {
				if err := b.Delete(ep.key()); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	return errors.Join(errs...)
}

// ContainerEndpoints are a container's endpoints, eth0 first: the keys
// are "ID/network", so one seek finds them.
func (m *Manager) ContainerEndpoints(id string) []*Endpoint {
	var out []*Endpoint
	prefix := []byte(id + "/")
	_ = m.cfg.DB.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(endpointsBucket).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var ep Endpoint
			if json.Unmarshal(v, &ep) == nil {
				out = append(out, &ep)
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b *Endpoint) int { return strings.Compare(a.Interface, b.Interface) })
	return out
}

// Endpoints are the endpoints on network netName ("" for all).
func (m *Manager) Endpoints(netName string) []*Endpoint {
	var out []*Endpoint
	_ = m.cfg.DB.View(func(tx *bolt.Tx) error {
		return tx.Bucket(endpointsBucket).ForEach(func(_, v []byte) error {
			var ep Endpoint
			if json.Unmarshal(v, &ep) == nil && (netName == "" || ep.Network == netName) {
				out = append(out, &ep)
			}
			return nil
		})
	})
	return out
}

func (m *Manager) save(ep *Endpoint) error {
	return m.cfg.DB.Update(func(tx *bolt.Tx) error {
		b, err := json.Marshal(ep)
		if err != nil {
			return err
		}
		return tx.Bucket(endpointsBucket).Put(ep.key(), b)
	})
}

// allocate records ep with the first free address of network n after its
// gateway.
func (m *Manager) allocate(n *Network, ep *Endpoint) error {
	return m.cfg.DB.Update(func(tx *bolt.Tx) error {
		used := map[netip.Addr]bool{n.gateway(): true}
		b := tx.Bucket(endpointsBucket)
		_ = b.ForEach(func(_, v []byte) error {
			var other Endpoint
			if json.Unmarshal(v, &other) == nil && other.Network == n.Name {
				if a, err := netip.ParseAddr(other.IP); err == nil {
					used[a] = true
				}
			}
			return nil
		})
		subnet := n.prefix().Masked()
		last := broadcast(subnet)
		for a := subnet.Addr().Next(); a.IsValid() && a.Less(last); a = a.Next() {
			if !used[a] {
				ep.IP = a.String()
				data, err := json.Marshal(ep)
				if err != nil {
					return err
				}
				return b.Put(ep.key(), data)
			}
		}
		return fmt.Errorf("no free address left in network %s (%s): %w", n.Name, subnet, errdefs.ErrUnavailable)
	})
}

func broadcast(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// checkPorts validates ports, picks host ports for those without one, and
// refuses a host port another container or a host process holds.
func (m *Manager) checkPorts(id string, ports []Port) ([]Port, error) {
	taken := map[string]bool{}
	for _, ep := range m.Endpoints("") {
		if ep.ID == id {
			continue
		}
		for _, p := range ep.Ports {
			taken[fmt.Sprintf("%s/%d", p.Proto, p.HostPort)] = true
		}
	}
	out := slices.Clone(ports)
	for i, p := range out {
		if p.Proto != "tcp" && p.Proto != "udp" {
			return nil, fmt.Errorf("port %d/%s: only tcp and udp can be published: %w", p.ContainerPort, p.Proto, errdefs.ErrInvalidArgument)
		}
		if p.HostIP != "" {
			if a, err := netip.ParseAddr(p.HostIP); err != nil || !a.Is4() {
				return nil, fmt.Errorf("host address %q of port %d: want an IPv4 address: %w", p.HostIP, p.ContainerPort, errdefs.ErrInvalidArgument)
			}
		}
		hostPort, err := freePort(p, taken)
		if err != nil {
			return nil, err
		}
		out[i].HostPort, out[i].HostPortEnd = hostPort, 0
		taken[fmt.Sprintf("%s/%d", p.Proto, hostPort)] = true
	}
	return out, nil
}

// freePort is p's host port if free, or the first free one of its range,
// or one the kernel picks for port 0.
func freePort(p Port, taken map[string]bool) (int, error) {
	last := max(p.HostPortEnd, p.HostPort)
	for port := p.HostPort; port <= last; port++ {
		try := p
		try.HostPort = port
		if got, err := holdPort(try); err == nil && !taken[fmt.Sprintf("%s/%d", p.Proto, got)] {
			return got, nil
		}
	}
	ip := p.HostIP
	if ip == "" {
		ip = "0.0.0.0"
	}
	want := strconv.Itoa(p.HostPort)
	if p.HostPortEnd > p.HostPort {
		want += "-" + strconv.Itoa(p.HostPortEnd)
	}
	//lint:ignore ST1005 Docker's words
	return 0, fmt.Errorf("Bind for %s:%s failed: port is already allocated: %w", ip, want, errdefs.ErrConflict)
}

// holdPort checks that the host port is free by binding it for a moment;
// port 0 gets one the kernel picks.
func holdPort(p Port) (int, error) {
	addr := net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
	if p.Proto == "udp" {
		c, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ensureBridge makes network n's bridge with the gateway address,
// forwarding, and the bridge's NAT and forward rules, where missing.
func (m *Manager) ensureBridge(n *Network) error {
	if m.ready[n.Bridge] {
		if _, err := netlink.LinkByName(n.Bridge); err == nil {
			return nil
		}
		delete(m.ready, n.Bridge) // removed behind berthd's back: set it up again
	}
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		if !errors.As(err, &netlink.LinkNotFoundError{}) {
			return fmt.Errorf("bridge %s: %w", n.Bridge, err)
		}
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.Bridge}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("make bridge %s: %w", n.Bridge, err)
		}
		if br, err = netlink.LinkByName(n.Bridge); err != nil {
			return err
		}
	}
	p := n.prefix()
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
	if err := netlink.AddrAdd(br, gw); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("address %s on %s: %w", n.Gateway, n.Bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return err
	}
	// Forwarding, and 127.0.0.1 as a source on the bridge, for ports
	// published on the host's loopback.
	for p, v := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":                           "1",
		"/proc/sys/net/ipv4/conf/" + n.Bridge + "/route_localnet": "1",
	} {
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			return fmt.Errorf("set %s: %w", p, err)
		}
	}
	for _, r := range bridgeRules(n) {
		if err := m.ensureRule(r); err != nil {
			return err
		}
	}
	m.ready[n.Bridge] = true
	return nil
}

// removeBridge deletes network n's rules and bridge.
func (m *Manager) removeBridge(n *Network) error {
	var errs []error
	if br, err := netlink.LinkByName(n.Bridge); err == nil {
		for _, r := range bridgeRules(n) {
			errs = append(errs, m.deleteRule(r))
		}
		errs = append(errs, netlink.LinkDel(br))
	}
	delete(m.ready, n.Bridge)
	return errors.Join(errs...)
}

// wire makes the veth pair with its container end made right in the
// container's namespace as eth0 (moving a link between namespaces waits
// for RCU grace periods: tens of milliseconds), gives it ep's address and
// a default route, and puts the host end in the bridge. It returns eth0's
// MAC address.
func (m *Manager) wire(n *Network, ep *Endpoint) (string, error) {
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return "", err
	}
	ns, err := netns.GetFromPath(m.NetnsPath(ep.ID))
	if err != nil {
		return "", err
	}
	defer ns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ep.HostVeth, MTU: br.Attrs().MTU},
		PeerName: ep.Interface, PeerNamespace: netlink.NsFd(ns)}
	err = netlink.LinkAdd(veth)
	if errors.Is(err, unix.EEXIST) {
		// The pair of this container's last run, whose namespace the
		// kernel is still tearing down: remove it now.
		if old, lerr := netlink.LinkByName(ep.HostVeth); lerr == nil {
			_ = netlink.LinkDel(old)
		}
		err = netlink.LinkAdd(veth)
	}
	if err != nil {
		return "", fmt.Errorf("make veth pair %s: %w", ep.HostVeth, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", err
	}
	defer h.Close()
	if lo, err := h.LinkByName("lo"); err == nil {
		if err := h.LinkSetUp(lo); err != nil {
			return "", err
		}
	}
	eth, err := h.LinkByName(ep.Interface)
	if err != nil {
		return "", err
	}
	ip := netip.MustParseAddr(ep.IP)
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ep.Prefix, 32)}}
	if err := h.AddrAdd(eth, addr); err != nil {
		return "", fmt.Errorf("address %s: %w", ep.IP, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return "", err
	}
	if ep.Interface == "eth0" {
		if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: n.gateway().AsSlice()}); err != nil {
			return "", fmt.Errorf("default route via %s: %w", n.gateway(), err)
		}
	}
	host, err := netlink.LinkByName(ep.HostVeth)
	if err != nil {
		return "", err
	}
	if err := netlink.LinkSetMasterByIndex(host, br.Attrs().Index); err != nil {
		return "", fmt.Errorf("put %s in %s: %w", ep.HostVeth, n.Bridge, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return "", err
	}
	return eth.Attrs().HardwareAddr.String(), nil
}

// Reconcile undoes what containers that are not running left (a daemon
// killed while they stopped): endpoints, namespaces, veths on the bridges
// and rules.
func (m *Manager) Reconcile(running func(id string) bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	keep := map[string]bool{}
	for _, ep := range m.Endpoints("") {
		if running(ep.ID) {
			keep[ep.ID] = true
			continue
		}
		errs = append(errs, m.detach(ep.ID))
	}
	files, _ := os.ReadDir(m.cfg.StateDir)
	for _, f := range files {
		if !keep[f.Name()] {
			errs = append(errs, deleteNetns(m.NetnsPath(f.Name())))
		}
	}
	veths := map[string]bool{}
	for _, ep := range m.Endpoints("") {
		if keep[ep.ID] {
			veths[ep.HostVeth] = true
		}
	}
	for _, n := range m.Networks() {
		br, err := netlink.LinkByName(n.Bridge)
		if err != nil {
			continue
		}
		links, _ := netlink.LinkList()
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index && !veths[l.Attrs().Name] {
				errs = append(errs, netlink.LinkDel(l))
			}
		}
		errs = append(errs, m.deleteStaleRules(n.Bridge, keep))
	}
	return errors.Join(errs...)
}

// Shutdown removes the bridges, and their rules, that no container is on
// (berthd stopping): a bridge is made again when a container attaches.
// The networks themselves stay, as Docker's do, until removed.
func (m *Manager) Shutdown() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, n := range m.Networks() {
		if len(m.Endpoints(n.Name)) == 0 {
			errs = append(errs, m.removeBridge(n))
		}
	}
	return errors.Join(errs...)
}

// Networks are the default network and those users made, by name.
func (m *Manager) Networks() []*Network {
	out := []*Network{m.def}
	_ = m.cfg.DB.View(func(tx *bolt.Tx) error {
		return tx.Bucket(networksBucket).ForEach(func(_, v []byte) error {
			var n Network
			if json.Unmarshal(v, &n) == nil {
				out = append(out, &n)
			}
			return nil
		})
	})
	return out
}

// Network finds a network by name, ID or unique ID prefix; "" and
// "default" are the default network.
func (m *Manager) Network(ref string) (*Network, error) {
	if ref == "" || ref == "default" {
		return m.def, nil
	}
	var found []*Network
	for _, n := range m.Networks() {
		if n.Name == ref || n.ID == ref {
			return n, nil
		}
		if len(ref) >= 3 && len(ref) < len(n.ID) && n.ID[:len(ref)] == ref {
			found = append(found, n)
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return nil, errdefs.ErrNotFound.WithMessage("network " + ref + " not found")
}

var validNetworkName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// CreateNetwork makes a user's bridge network: subnet is a CIDR, or ""
// for the first free /24 of 10.90.0.0/16. Its bridge is made when the
// first container attaches.
func (m *Manager) CreateNetwork(name, subnet string, labels map[string]string) (*Network, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !validNetworkName.MatchString(name) || len(name) > 64 {
		return nil, fmt.Errorf("invalid network name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed: %w", name, errdefs.ErrInvalidArgument)
	}
	if slices.Contains([]string{DefaultNetwork, "default", "host", "none"}, name) {
		return nil, fmt.Errorf("%s is a pre-defined network and cannot be created: %w", name, errdefs.ErrPermissionDenied)
	}
	existing := m.Networks()
	for _, n := range existing {
		if n.Name == name {
			return nil, fmt.Errorf("network with name %s already exists: %w", name, errdefs.ErrConflict)
		}
	}
	var gw netip.Prefix
	if subnet != "" {
		p, err := netip.ParsePrefix(subnet)
		if err != nil || !p.Addr().Is4() || p.Bits() > 30 || p.Bits() < 8 {
			return nil, fmt.Errorf("subnet %q: want an IPv4 CIDR with a prefix of 8 to 30 bits: %w", subnet, errdefs.ErrInvalidArgument)
		}
		p = p.Masked()
		if overlaps(p, existing) {
			return nil, fmt.Errorf("subnet %s overlaps another network's: %w", p, errdefs.ErrConflict)
		}
		gw = netip.PrefixFrom(p.Addr().Next(), p.Bits())
	} else {
		for i := range 256 {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 90, byte(i), 0}), 24)
			if !overlaps(p, existing) && !routed(p) {
				gw = netip.PrefixFrom(p.Addr().Next(), 24)
				break
			}
		}
		if !gw.IsValid() {
			return nil, fmt.Errorf("no free /24 left in 10.90.0.0/16: name a subnet: %w", errdefs.ErrUnavailable)
		}
	}
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	n := &Network{Name: name, ID: hex.EncodeToString(id), Gateway: gw.String(), Created: time.Now().UTC(), Labels: labels}
	n.Bridge = "br-" + n.ID[:12]
	err := m.cfg.DB.Update(func(tx *bolt.Tx) error {
		b, err := json.Marshal(n)
		if err != nil {
			return err
		}
		return tx.Bucket(networksBucket).Put([]byte(n.Name), b)
	})
	return n, err
}

func overlaps(p netip.Prefix, nets []*Network) bool {
	for _, n := range nets {
		if n.prefix().Masked().Overlaps(p) {
			return true
		}
	}
	return false
}

// routed reports whether the host routes p somewhere already (another
// engine's bridge, a VPN): such a subnet is not taken for a new network.
func routed(p netip.Prefix) bool {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		a, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		if ok && ones > 0 && netip.PrefixFrom(a, ones).Overlaps(p) { // not the default route
			return true
		}
	}
	return false
}

// RemoveNetwork removes a user's network with no container on it.
func (m *Manager) RemoveNetwork(ref string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.Network(ref)
	if err != nil {
		return err
	}
	if n == m.def {
		return fmt.Errorf("%s is a pre-defined network and cannot be removed: %w", n.Name, errdefs.ErrPermissionDenied)
	}
	if eps := m.Endpoints(n.Name); len(eps) > 0 {
		return fmt.Errorf("error while removing network: network %s has active endpoints: %w", n.Name, errdefs.ErrConflict)
	}
	if err := m.removeBridge(n); err != nil {
		return err
	}
	return m.cfg.DB.Update(func(tx *bolt.Tx) error { return tx.Bucket(networksBucket).Delete([]byte(n.Name)) })
}

func sha256sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }
