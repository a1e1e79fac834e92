package network

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// rule is an iptables rule: table, chain, and spec (without the comment,
// added by ensureRule and deleteRule).
type rule struct {
	table, chain string
	insert       bool // at the top of the chain, ahead of a DROP policy's rules
	spec         []string
	comment      string
}

func (m *Manager) iptables() (*iptables.IPTables, error) {
	if m.ipt != nil {
		return m.ipt, nil
	}
	ipt, err := iptables.New()
	if err != nil {
		return nil, fmt.Errorf("bridge networks need iptables (apt-get install iptables): %w", err)
	}
	m.ipt = ipt
	return ipt, nil
}

// bridgeRules are a network's outbound NAT, NAT of the host's own
// connections to published ports, and forwarding to and from it.
func bridgeRules(n *Network) []rule {
	br, subnet, c := n.Bridge, n.prefix().Masked().String(), "berth:"+n.Bridge
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
	c := "berth:" + ep.Bridge + ":" + ep.ID[:12]
	rules := []rule{
		{table: "nat", chain: "PREROUTING", spec: dnat, comment: c},
		{table: "nat", chain: "OUTPUT", spec: dnat, comment: c},
		{table: "filter", chain: "FORWARD", insert: true, spec: []string{"-d", ep.IP + "/32", "!", "-i", ep.Bridge, "-o", ep.Bridge,
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

// deleteStaleRules removes the port rules of bridge whose container is not
// in keep.
func (m *Manager) deleteStaleRules(bridge string, keep map[string]bool) error {
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
	prefix := "berth:" + bridge + ":"
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
