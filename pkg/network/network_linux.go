package network

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/internal/osthread"
)

// Config is the default bridge network.
type Config struct {
	Bridge   string // link name (at most 15 bytes)
	Gateway  string // the bridge's address with the subnet's prefix: "10.89.0.1/16"
	StateDir string // where network namespaces are pinned, one file per container
	DB       *bolt.DB
}

// Port is a published port.
type Port struct {
	HostIP        string `json:"hostIP,omitempty"` // "" for every address
	HostPort      int    `json:"hostPort"`         // 0: any free port, chosen at Attach
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

// Endpoint is a container's place on the bridge.
type Endpoint struct {
	ID       string `json:"id"`
	IP       string `json:"ip"`
	Prefix   int    `json:"prefix"`
	Gateway  string `json:"gateway"`
	MAC      string `json:"mac"`
	HostVeth string `json:"hostVeth"`
	Ports    []Port `json:"ports,omitempty"`
}

// Manager wires containers into the bridge.
type Manager struct {
	cfg    Config
	subnet netip.Prefix
	gw     netip.Addr
	ipt    *iptables.IPTables
	mu     sync.Mutex // one change of the network at a time
	// ready: the bridge, its address, sysctls and rules were set up by
	// this daemon; later Attaches only check the link is still there.
	ready bool
}

var endpointsBucket = []byte("endpoints") // container ID -> Endpoint (JSON)

// New checks the configuration; nothing is created on the host until the
// first Attach.
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
		_, err := tx.CreateBucketIfNotExists(endpointsBucket)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, subnet: gw.Masked(), gw: gw.Addr()}, nil
}

// NetnsPath is where a container's network namespace is pinned.
func (m *Manager) NetnsPath(id string) string { return filepath.Join(m.cfg.StateDir, id) }

func (m *Manager) iptables() (*iptables.IPTables, error) {
	if m.ipt != nil {
		return m.ipt, nil
	}
	ipt, err := iptables.New()
	if err != nil {
		return nil, fmt.Errorf("the bridge network needs iptables (apt-get install iptables): %w", err)
	}
	m.ipt = ipt
	return ipt, nil
}

// Attach gives container id its network: a namespace at NetnsPath(id), a
// veth pair into the bridge with a free address, a default route, and the
// ports published. On error nothing of it is left.
func (m *Manager) Attach(id string, ports []Port) (_ *Endpoint, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer func() {
		if err != nil {
			_ = m.detach(id)
		}
	}()
	if err := m.ensureBridge(); err != nil {
		return nil, err
	}
	ep := &Endpoint{ID: id, Prefix: m.subnet.Bits(), Gateway: m.gw.String(), HostVeth: "veth" + id[:10]}
	if ep.Ports, err = m.checkPorts(id, ports); err != nil {
		return nil, err
	}
	// Recorded first: an address is taken, and a crash from here on is
	// undone at the next start.
	if err := m.allocate(ep); err != nil {
		return nil, err
	}
	if err := newNetns(m.NetnsPath(id)); err != nil {
		return nil, fmt.Errorf("make network namespace: %w", err)
	}
	if ep.MAC, err = m.wire(ep); err != nil {
		return nil, err
	}
	for _, p := range ep.Ports {
		if err := m.portRules(ep, p, true); err != nil {
			return nil, fmt.Errorf("publish %s: %w", p, err)
		}
	}
	return ep, m.save(ep)
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
	ep, _ := m.Endpoint(id)
	if ep != nil {
		for _, p := range ep.Ports {
			errs = append(errs, m.portRules(ep, p, false))
		}
	}
	// The namespace's end goes with the namespace, and the host end with
	// it, in the kernel's own time: deleting a link waits for RCU grace
	// periods, tens of milliseconds that a container's stop need not wait.
	errs = append(errs, deleteNetns(m.NetnsPath(id)))
	errs = append(errs, m.cfg.DB.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(endpointsBucket).Delete([]byte(id))
	}))
	return errors.Join(errs...)
}

// Endpoint is container id's endpoint, if attached.
func (m *Manager) Endpoint(id string) (*Endpoint, bool) {
	var ep *Endpoint
	_ = m.cfg.DB.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(endpointsBucket).Get([]byte(id)); v != nil {
			ep = &Endpoint{}
			if json.Unmarshal(v, ep) != nil {
				ep = nil
			}
		}
		return nil
	})
	return ep, ep != nil
}

func (m *Manager) endpoints() []*Endpoint {
	var out []*Endpoint
	_ = m.cfg.DB.View(func(tx *bolt.Tx) error {
		return tx.Bucket(endpointsBucket).ForEach(func(_, v []byte) error {
			var ep Endpoint
			if json.Unmarshal(v, &ep) == nil {
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
		return tx.Bucket(endpointsBucket).Put([]byte(ep.ID), b)
	})
}

// allocate records ep with the first free address after the gateway.
func (m *Manager) allocate(ep *Endpoint) error {
	return m.cfg.DB.Update(func(tx *bolt.Tx) error {
		used := map[netip.Addr]bool{m.gw: true}
		b := tx.Bucket(endpointsBucket)
		_ = b.ForEach(func(_, v []byte) error {
			var other Endpoint
			if json.Unmarshal(v, &other) == nil {
				if a, err := netip.ParseAddr(other.IP); err == nil {
					used[a] = true
				}
			}
			return nil
		})
		last := broadcast(m.subnet)
		for a := m.subnet.Addr().Next(); a.IsValid() && a.Less(last); a = a.Next() {
			if !used[a] {
				ep.IP = a.String()
				data, err := json.Marshal(ep)
				if err != nil {
					return err
				}
				return b.Put([]byte(ep.ID), data)
			}
		}
		return fmt.Errorf("no free address left in %s: %w", m.subnet, errdefs.ErrUnavailable)
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
	for _, ep := range m.endpoints() {
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
		hostPort, err := holdPort(p)
		if err != nil || taken[fmt.Sprintf("%s/%d", p.Proto, hostPort)] {
			ip := p.HostIP
			if ip == "" {
				ip = "0.0.0.0"
			}
			//lint:ignore ST1005 Docker's words
			return nil, fmt.Errorf("Bind for %s:%d failed: port is already allocated: %w", ip, p.HostPort, errdefs.ErrConflict)
		}
		out[i].HostPort = hostPort
		taken[fmt.Sprintf("%s/%d", p.Proto, hostPort)] = true
	}
	return out, nil
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

// ensureBridge makes the bridge with the gateway address, forwarding, and
// the bridge's NAT and forward rules, where missing.
func (m *Manager) ensureBridge() error {
	if m.ready {
		if _, err := netlink.LinkByName(m.cfg.Bridge); err == nil {
			return nil
		}
		m.ready = false // removed behind berthd's back: set it up again
	}
	br, err := netlink.LinkByName(m.cfg.Bridge)
	if err != nil {
		if !errors.As(err, &netlink.LinkNotFoundError{}) {
			return fmt.Errorf("bridge %s: %w", m.cfg.Bridge, err)
		}
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: m.cfg.Bridge}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("make bridge %s: %w", m.cfg.Bridge, err)
		}
		if br, err = netlink.LinkByName(m.cfg.Bridge); err != nil {
			return err
		}
	}
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: m.gw.AsSlice(), Mask: net.CIDRMask(m.subnet.Bits(), 32)}}
	if err := netlink.AddrAdd(br, gw); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("address %s on %s: %w", m.cfg.Gateway, m.cfg.Bridge, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return err
	}
	// Forwarding, and 127.0.0.1 as a source on the bridge, for ports
	// published on the host's loopback.
	for p, v := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward":                               "1",
		"/proc/sys/net/ipv4/conf/" + m.cfg.Bridge + "/route_localnet": "1",
	} {
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			return fmt.Errorf("set %s: %w", p, err)
		}
	}
	for _, r := range m.bridgeRules() {
		if err := m.ensureRule(r); err != nil {
			return err
		}
	}
	m.ready = true
	return nil
}

// rule is an iptables rule: table, chain, and spec (without the comment,
// added by ensureRule and deleteRule).
type rule struct {
	table, chain string
	insert       bool // at the top of the chain, ahead of a DROP policy's rules
	spec         []string
	comment      string
}

func (m *Manager) bridgeRules() []rule {
	br, subnet, c := m.cfg.Bridge, m.subnet.String(), "berth:"+m.cfg.Bridge
	return []rule{
		{table: "nat", chain: "POSTROUTING", spec: []string{"-s", subnet, "!", "-o", br, "-j", "MASQUERADE"}, comment: c},
		{table: "nat", chain: "POSTROUTING", spec: []string{"-o", br, "-m", "addrtype", "--src-type", "LOCAL", "-j", "MASQUERADE"}, comment: c},
		{table: "filter", chain: "FORWARD", insert: true, spec: []string{"-i", br, "-j", "ACCEPT"}, comment: c},
		{table: "filter", chain: "FORWARD", insert: true, spec: []string{"-o", br, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"}, comment: c},
	}
}

// portRules adds (or deletes) the rules publishing p for ep.
func (m *Manager) portRules(ep *Endpoint, p Port, add bool) error {
	dst := []string{"-p", p.Proto, "-m", "addrtype", "--dst-type", "LOCAL"}
	if p.HostIP != "" && p.HostIP != "0.0.0.0" {
		dst = append(dst, "-d", p.HostIP)
	}
	dnat := append(dst, "--dport", strconv.Itoa(p.HostPort), "-j", "DNAT", "--to-destination", net.JoinHostPort(ep.IP, strconv.Itoa(p.ContainerPort)))
	c := "berth:" + m.cfg.Bridge + ":" + ep.ID[:12]
	rules := []rule{
		{table: "nat", chain: "PREROUTING", spec: dnat, comment: c},
		{table: "nat", chain: "OUTPUT", spec: dnat, comment: c},
		{table: "filter", chain: "FORWARD", insert: true, spec: []string{"-d", ep.IP + "/32", "!", "-i", m.cfg.Bridge, "-o", m.cfg.Bridge,
			"-p", p.Proto, "--dport", strconv.Itoa(p.ContainerPort), "-j", "ACCEPT"}, comment: c},
	}
	var errs []error
	for _, r := range rules {
		if add {
			if err := m.ensureRule(r); err != nil {
				return err
			}
			continue
		}
		errs = append(errs, m.deleteRule(r))
	}
	return errors.Join(errs...)
}

func (r rule) full() []string {
	return append(slices.Clone(r.spec), "-m", "comment", "--comment", r.comment)
}

func (m *Manager) ensureRule(r rule) error {
	ipt, err := m.iptables()
	if err != nil {
		return err
	}
	ok, err := ipt.Exists(r.table, r.chain, r.full()...)
	if err != nil || ok {
		return err
	}
	if r.insert {
		return ipt.Insert(r.table, r.chain, 1, r.full()...)
	}
	return ipt.Append(r.table, r.chain, r.full()...)
}

func (m *Manager) deleteRule(r rule) error {
	ipt, err := m.iptables()
	if err != nil {
		return err
	}
	return ipt.DeleteIfExists(r.table, r.chain, r.full()...)
}

// wire makes the veth pair with its container end made right in the
// container's namespace as eth0 (moving a link between namespaces waits
// for RCU grace periods: tens of milliseconds), gives it ep's address and
// a default route, and puts the host end in the bridge. It returns eth0's
// MAC address.
func (m *Manager) wire(ep *Endpoint) (string, error) {
	br, err := netlink.LinkByName(m.cfg.Bridge)
	if err != nil {
		return "", err
	}
	ns, err := netns.GetFromPath(m.NetnsPath(ep.ID))
	if err != nil {
		return "", err
	}
	defer ns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ep.HostVeth, MTU: br.Attrs().MTU},
		PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
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
	eth, err := h.LinkByName("eth0")
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
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: m.gw.AsSlice()}); err != nil {
		return "", fmt.Errorf("default route via %s: %w", m.gw, err)
	}
	host, err := netlink.LinkByName(ep.HostVeth)
	if err != nil {
		return "", err
	}
	if err := netlink.LinkSetMasterByIndex(host, br.Attrs().Index); err != nil {
		return "", fmt.Errorf("put %s in %s: %w", ep.HostVeth, m.cfg.Bridge, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return "", err
	}
	return eth.Attrs().HardwareAddr.String(), nil
}

// newNetns makes a network namespace pinned at path: a bind mount of a
// throwaway thread's namespace, which outlives the thread.
func newNetns(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	err = osthread.Throwaway(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		return unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "", unix.MS_BIND, "")
	})
	if err != nil {
		os.Remove(path)
	}
	return err
}

// deleteNetns unpins a namespace; the kernel frees it, and the veth end
// in it, once nothing else holds it.
func deleteNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Reconcile undoes what containers that are not running left (a daemon
// killed while they stopped): endpoints, namespaces, veths on the bridge
// and rules.
func (m *Manager) Reconcile(running func(id string) bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	keep := map[string]bool{}
	for _, ep := range m.endpoints() {
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
	if br, err := netlink.LinkByName(m.cfg.Bridge); err == nil {
		links, _ := netlink.LinkList()
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index && !keepsVeth(keep, l.Attrs().Name) {
				errs = append(errs, netlink.LinkDel(l))
			}
		}
	}
	errs = append(errs, m.deleteStaleRules(keep))
	return errors.Join(errs...)
}

func keepsVeth(keep map[string]bool, name string) bool {
	for id := range keep {
		if name == "veth"+id[:10] {
			return true
		}
	}
	return false
}

// deleteStaleRules removes port rules of this bridge whose container is
// not in keep.
func (m *Manager) deleteStaleRules(keep map[string]bool) error {
	if _, err := exec.LookPath("iptables"); err != nil {
		return nil // no rules were ever made without it
	}
	ipt, err := m.iptables()
	if err != nil {
		return err
	}
	kept := map[string]bool{}
	for id := range keep {
		kept[id[:12]] = true
	}
	prefix := "berth:" + m.cfg.Bridge + ":"
	var errs []error
	for _, tc := range [][2]string{{"nat", "PREROUTING"}, {"nat", "OUTPUT"}, {"filter", "FORWARD"}} {
		rules, err := ipt.List(tc[0], tc[1])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range rules {
			i := strings.Index(r, prefix)
			if i < 0 || kept[strings.Trim(r[i+len(prefix):], `" `)] {
				continue
			}
			args, err := splitRule(r)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, ipt.Delete(tc[0], tc[1], args...))
		}
	}
	return errors.Join(errs...)
}

// splitRule turns `-A CHAIN -p tcp ... --comment "x y"` into the rule's
// arguments, without "-A CHAIN".
func splitRule(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	quoted, has := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, has = !quoted, true
		case r == ' ' && !quoted:
			if has {
				args = append(args, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteRune(r)
			has = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unbalanced quotes in rule %q", s)
	}
	if has {
		args = append(args, cur.String())
	}
	if len(args) < 2 || args[0] != "-A" {
		return nil, fmt.Errorf("not a rule: %q", s)
	}
	return args[2:], nil
}

// Shutdown removes the bridge and its rules when no container is on it
// (berthd stopping with none left running).
func (m *Manager) Shutdown() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.endpoints()) > 0 {
		return nil
	}
	br, err := netlink.LinkByName(m.cfg.Bridge)
	if err != nil {
		return nil // never made
	}
	var errs []error
	for _, r := range m.bridgeRules() {
		errs = append(errs, m.deleteRule(r))
	}
	errs = append(errs, netlink.LinkDel(br))
	m.ready = false
	return errors.Join(errs...)
}
