package network

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestSplitRule(t *testing.T) {
	args, err := splitRule(`-A PREROUTING -d 127.0.0.1/32 -p tcp -m comment --comment "berth:br0:0123456789ab" -j DNAT --to-destination 10.0.0.2:80`)
	if err != nil {
		t.Fatal(err)
	}
	want := "-d 127.0.0.1/32 -p tcp -m comment --comment berth:br0:0123456789ab -j DNAT --to-destination 10.0.0.2:80"
	if strings.Join(args, " ") != want {
		t.Errorf("got %q", args)
	}
	for _, bad := range []string{`-A X -m comment --comment "open`, `-P INPUT ACCEPT`} {
		if _, err := splitRule(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestBroadcastAndNames(t *testing.T) {
	if b := broadcast(netip.MustParsePrefix("10.89.0.0/16")); b.String() != "10.89.255.255" {
		t.Errorf("broadcast: %s", b)
	}
	id := strings.Repeat("ab", 32)
	for _, n := range []string{DefaultNetwork, "appnet", strings.Repeat("x", 64)} {
		if v := hostVeth(id, n); len(v) > 15 || !strings.HasPrefix(v, "veth") {
			t.Errorf("veth name for %s: %q", n, v)
		}
	}
	if hostVeth(id, "a") == hostVeth(id, "b") {
		t.Error("two networks, one veth name")
	}
}

// TestCreateNetwork: names and subnets are checked, a free /24 is picked
// when none is given, and pre-defined networks cannot be made or removed.
func TestCreateNetwork(t *testing.T) {
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	m, err := New(Config{Bridge: "brunit0", Gateway: "10.89.0.1/16", StateDir: filepath.Join(dir, "ns"), DB: db})
	if err != nil {
		t.Fatal(err)
	}
	a, err := m.CreateNetwork("a", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.CreateNetwork("b", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Subnet() == b.Subnet() || !strings.HasPrefix(a.Subnet(), "10.90.") || len(a.Bridge) > 15 {
		t.Errorf("a %s on %s, b %s", a.Subnet(), a.Bridge, b.Subnet())
	}
	for name, subnet := range map[string]string{
		"a": "", "bridge": "", "host": "", "bad name": "", "c": "10.89.1.0/24", "d": "300.1.1.0/24", "e": "10.1.0.0/31",
	} {
		if _, err := m.CreateNetwork(name, subnet, nil); err == nil {
			t.Errorf("%s %s: accepted", name, subnet)
		}
	}
	if n, err := m.Network(a.ID[:6]); err != nil || n.Name != "a" {
		t.Errorf("by ID prefix: %v %v", n, err)
	}
	if err := m.RemoveNetwork(DefaultNetwork); err == nil {
		t.Error("the default network was removed")
	}
	if err := m.RemoveNetwork("a"); err != nil {
		t.Error(err)
	}
	if _, err := m.Network("a"); err == nil {
		t.Error("a is still there")
	}
}
