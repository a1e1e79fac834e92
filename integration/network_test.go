package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-containers/berth/internal/testutil"
)

// freePort is a TCP or UDP port free on 127.0.0.1 just now.
func freePort(t *testing.T, proto string) int {
	t.Helper()
	if proto == "udp" {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// httpGet fetches url, retrying while the server starts.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	var last error
	for range 50 {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, last)
	return ""
}

// links are the links on the daemon's bridge.
func (d *testDaemon) links(t *testing.T) string {
	t.Helper()
	out, _ := exec.Command("ip", "-br", "link", "show", "master", d.bridge).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// rules are the iptables rules of the daemon's bridge, both tables.
func (d *testDaemon) rules() string {
	var all []string
	for _, table := range []string{"filter", "nat"} {
		out, _ := exec.Command("iptables", "-t", table, "-S").CombinedOutput()
		if l := grepLines(string(out), "berth:"+d.bridge+":"); l != "" {
			all = append(all, l)
		}
	}
	return strings.Join(all, "\n")
}

// TestBridgeNetwork: containers get an address on the daemon's bridge and
// reach each other by it; a published TCP port answers on 127.0.0.1 and
// from a second host through the host's address, a UDP port on
// 127.0.0.1; -P picks free ports for EXPOSEd ones; a port held already
// is a clear error that leaves nothing wired; stopping a container
// removes its veth, rules and namespace.
func TestBridgeNetwork(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	testutil.Require(t, "iptables")
	www := t.TempDir()
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("hello from the bridge\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t, "tcp")
	d.berthOK(t, "run", "-d", "--name", "web", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), "-v", www+":/www:ro",
		"busybox", "busybox", "httpd", "-f", "-p", "80", "-h", "/www")
	if got := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port)); got != "hello from the bridge\n" {
		t.Errorf("published port: %q", got)
	}
	if ps := d.berthOK(t, "ps"); !strings.Contains(ps, fmt.Sprintf("127.0.0.1:%d->80/tcp", port)) {
		t.Errorf("ps lacks the port:\n%s", ps)
	}
	if out := d.berthOK(t, "port", "web"); out != fmt.Sprintf("80/tcp -> 127.0.0.1:%d\n", port) {
		t.Errorf("berth port: %q", out)
	}
	if out := d.dockerOK(t, "port", "web", "80"); out != fmt.Sprintf("127.0.0.1:%d\n", port) {
		t.Errorf("docker port web 80: %q", out)
	}
	ip := strings.TrimSpace(d.berthOK(t, "inspect", "-f", "{{.NetworkSettings.Networks.bridge.IPAddress}}", "web"))
	if !strings.HasPrefix(ip, strings.TrimSuffix(d.bip, "1/24")) {
		t.Fatalf("web's address %q is not in %s", ip, d.bip)
	}
	out := d.berthOK(t, "run", "--rm", "busybox", "sh", "-c", "busybox wget -qO- http://"+ip+"/ && tail -1 /etc/hosts && cat /etc/hostname")
	if !strings.HasPrefix(out, "hello from the bridge\n") || !strings.Contains(out, strings.TrimSuffix(d.bip, "1/24")) {
		t.Errorf("container to container, and /etc/hosts:\n%s", out)
	}

	// A second host: a network namespace joined to this one by a veth.
	peer := secondHost(t)
	wget := func(url string) (string, error) {
		// busybox wget -T crashes (1.35); timeout bounds it instead.
		b, err := exec.Command("timeout", "-s", "KILL", "10", "ip", "netns", "exec", peer.netns, testutil.BusyboxPath, "wget", "-qO-", url).CombinedOutput()
		return string(b), err
	}
	if out, err := wget(fmt.Sprintf("http://%s:%d/", peer.hostIP, port)); err == nil {
		t.Errorf("a port published on 127.0.0.1 answered another host: %s", out)
	}
	port2 := freePort(t, "tcp")
	d.berthOK(t, "run", "-d", "--name", "web2", "-p", fmt.Sprintf("%d:80", port2), "-v", www+":/www:ro",
		"busybox", "busybox", "httpd", "-f", "-p", "80", "-h", "/www")
	httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/", port2))
	if out, err := wget(fmt.Sprintf("http://%s:%d/", peer.hostIP, port2)); err != nil || out != "hello from the bridge\n" {
		t.Errorf("from a second host through %s:%d: %v %s", peer.hostIP, port2, err, out)
	}

	// UDP.
	uport := freePort(t, "udp")
	d.berthOK(t, "run", "-d", "--name", "echo", "-p", fmt.Sprintf("127.0.0.1:%d:5353/udp", uport), "busybox", "/probe", "udp-echo", "5353")
	eventually(t, "the UDP echo answers", func() bool {
		c, err := net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", uport))
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = c.Write([]byte("ping"))
		b := make([]byte, 64)
		n, err := c.Read(b)
		return err == nil && string(b[:n]) == "echo: ping"
	})

	// -P: the image's EXPOSE on free host ports.
	ctx := writeContext(t, map[string]string{"Dockerfile": "FROM busybox\nEXPOSE 80 8080/udp\n"})
	d.berthOK(t, "build", "-t", "exposed", ctx)
	d.berthOK(t, "run", "-d", "--name", "all", "-P", "-v", www+":/www:ro", "exposed", "busybox", "httpd", "-f", "-p", "80", "-h", "/www")
	hostPort := strings.TrimSpace(d.berthOK(t, "inspect", "-f", `{{(index (index .NetworkSettings.Ports "80/tcp") 0).HostPort}}`, "all"))
	if got := httpGet(t, "http://127.0.0.1:"+hostPort+"/"); got != "hello from the bridge\n" {
		t.Errorf("-P port %s: %q", hostPort, got)
	}
	if udp := d.berthOK(t, "inspect", "-f", `{{index .NetworkSettings.Ports "8080/udp"}}`, "all"); !strings.Contains(udp, "0.0.0.0") {
		t.Errorf("-P 8080/udp: %s", udp)
	}

	// A port in use: a clear error, and nothing half-wired.
	veths := d.links(t)
	out, err := d.berth(t, "", "run", "-d", "--name", "clash", "-p", fmt.Sprintf("127.0.0.1:%d:80", port), "busybox", "sleep", "60")
	if err == nil || !strings.Contains(out, fmt.Sprintf("Bind for 127.0.0.1:%d failed: port is already allocated", port)) {
		t.Errorf("a port in use: %v\n%s", err, out)
	}
	if st := d.berthOK(t, "inspect", "-f", "{{.State.Status}}", "clash"); strings.TrimSpace(st) != "created" {
		t.Errorf("the clashing container is %s", st)
	}
	if now := d.links(t); now != veths {
		t.Errorf("the failed start left links:\n%s\nbefore:\n%s", now, veths)
	}
	// A range of host ports: the first free one of it.
	d.berthOK(t, "run", "-d", "--name", "ranged", "-p", fmt.Sprintf("127.0.0.1:%d-%d:80", port, port+20), "busybox", "sleep", "60")
	if got := d.berthOK(t, "port", "ranged", "80"); got == fmt.Sprintf("127.0.0.1:%d\n", port) || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("a port from a range whose first is taken: %q", got)
	}

	// Stopping removes what the container had on the host.
	d.berthOK(t, "rm", "-f", "web", "web2", "echo", "all", "clash", "ranged")
	// The kernel tears a namespace, and the veth in it, down on its own time.
	eventually(t, "the veths leave the bridge", func() bool { return d.links(t) == "" })
	if rules := d.rules(); rules != "" {
		t.Errorf("rules left:\n%s", rules)
	}
	if ns, _ := os.ReadDir(filepath.Join(d.root, "netns")); len(ns) > 0 {
		t.Errorf("network namespaces left: %d", len(ns))
	}
}

// secondHost is a network namespace joined to the host by a veth pair,
// with its own /30: a host on the other side of a wire.
type peerHost struct{ netns, hostIP string }

func secondHost(t *testing.T) peerHost {
	t.Helper()
	n := daemonCount.Add(1)
	name := fmt.Sprintf("berth-peer-%d-%d", os.Getpid(), n)
	hostLink, peerLink := fmt.Sprintf("bph%04x%02x", os.Getpid()&0xffff, n&0xff), fmt.Sprintf("bpp%04x%02x", os.Getpid()&0xffff, n&0xff)
	subnet := fmt.Sprintf("10.250.%d.", n&0xff)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", hostLink).Run()
		_ = exec.Command("ip", "netns", "del", name).Run()
	})
	run("link", "add", hostLink, "type", "veth", "peer", "name", peerLink)
	run("link", "set", peerLink, "netns", name)
	run("addr", "add", subnet+"1/30", "dev", hostLink)
	run("link", "set", hostLink, "up")
	run("-n", name, "addr", "add", subnet+"2/30", "dev", peerLink)
	run("-n", name, "link", "set", peerLink, "up")
	run("-n", name, "link", "set", "lo", "up")
	return peerHost{netns: name, hostIP: subnet + "1"}
}

// TestNetworkCyclesAndDaemonKill: 100 run/rm cycles with a published port,
// then a daemon killed while a container stops, leave no veth, rule,
// namespace or address taken.
func TestNetworkCyclesAndDaemonKill(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	testutil.Require(t, "iptables")
	for i := range 100 {
		out := d.berthOK(t, "run", "--rm", "-p", fmt.Sprintf("127.0.0.1:%d:80", freePort(t, "tcp")), "busybox", "sh", "-c", "tail -1 /etc/hosts")
		if !strings.HasPrefix(out, strings.TrimSuffix(d.bip, "1/24")) {
			t.Fatalf("cycle %d: /etc/hosts ends %q", i, out)
		}
	}
	eventually(t, "the cycles' veths go", func() bool { return d.links(t) == "" })
	if rules := d.rules(); rules != "" {
		t.Errorf("rules left after the cycles:\n%s", rules)
	}
	// Addresses are given back: a new container gets the first one.
	first := strings.TrimSuffix(d.bip, "1/24") + "2"
	if out := d.berthOK(t, "run", "--rm", "busybox", "sh", "-c", "tail -1 /etc/hosts"); !strings.HasPrefix(out, first+"\t") {
		t.Errorf("after the cycles a container got %q, want %s", out, first)
	}

	d.berthOK(t, "run", "-d", "--name", "victim", "-p", fmt.Sprintf("127.0.0.1:%d:80", freePort(t, "tcp")), "busybox", "sleep", "600")
	pid, _ := strconv.Atoi(strings.TrimSpace(d.berthOK(t, "inspect", "-f", "{{.State.Pid}}", "victim")))
	d.kill()
	// The container ends while no berthd is there to see it.
	if p, err := os.FindProcess(pid); err == nil {
		_ = p.Kill()
	}
	time.Sleep(200 * time.Millisecond)
	d.start(t)
	eventually(t, "the stopped container's network is undone", func() bool {
		ns, _ := os.ReadDir(filepath.Join(d.root, "netns"))
		return d.links(t) == "" && d.rules() == "" && len(ns) == 0
	})
}

// TestUserNetworks: on a network a user made, containers find each other
// by name; the docker CLI creates, lists, inspects and removes networks;
// a network with containers on it is not removed.
func TestUserNetworks(t *testing.T) {
	t.Parallel()
	d := withBusybox(t)
	testutil.Require(t, "iptables")
	subnet := fmt.Sprintf("10.%d.%d.0/24", 150+os.Getpid()%50, daemonCount.Add(1)&0xff)
	d.dockerOK(t, "network", "create", "--subnet", subnet, "appnet")
	t.Cleanup(func() { _, _ = d.docker(t, "", "network", "rm", "appnet") })
	if out := d.dockerOK(t, "network", "ls", "--format", "{{.Name}} {{.Driver}}"); !strings.Contains(out, "appnet bridge") ||
		!strings.Contains(out, "bridge bridge") || !strings.Contains(out, "host host") || !strings.Contains(out, "none null") {
		t.Errorf("docker network ls:\n%s", out)
	}
	if out, err := d.docker(t, "", "network", "create", "appnet"); err == nil || !strings.Contains(out, "already exists") {
		t.Errorf("a second appnet: %v %s", err, out)
	}
	d.berthOK(t, "run", "-d", "--name", "db", "--network", "appnet", "busybox", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
	out := d.berthOK(t, "run", "--rm", "--network", "appnet", "busybox", "sh", "-c", "busybox wget -qO- http://db/hostname")
	id := strings.TrimSpace(d.berthOK(t, "inspect", "-f", "{{.Config.Hostname}}", "db"))
	if strings.TrimSpace(out) != id {
		t.Errorf("db by name from another container: %q, want %q", out, id)
	}
	// --network container:db shares db's namespace: its server on 127.0.0.1.
	if out := d.berthOK(t, "run", "--rm", "--network", "container:db", "busybox", "busybox", "wget", "-qO-", "http://127.0.0.1/hostname"); strings.TrimSpace(out) != id {
		t.Errorf("container:db's localhost: %q, want %q", out, id)
	}
	d.berthOK(t, "create", "--name", "idle", "busybox", "true")
	if out, err := d.berth(t, "", "run", "--rm", "--network", "container:idle", "busybox", "true"); err == nil || !strings.Contains(out, "cannot join network of a non running container: idle") {
		t.Errorf("joining a container that is not running: %v %s", err, out)
	}
	if got := d.dockerOK(t, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}} {{len .Containers}}", "appnet"); strings.TrimSpace(got) != subnet+" 1" {
		t.Errorf("docker network inspect: %q", got)
	}
	if out, err := d.docker(t, "", "network", "rm", "appnet"); err == nil || !strings.Contains(out, "active endpoints") {
		t.Errorf("removing a network in use: %v %s", err, out)
	}
	if out, err := d.berth(t, "", "run", "--rm", "--network", "nonet", "busybox", "true"); err == nil || !strings.Contains(out, "network nonet not found") {
		t.Errorf("an unknown network: %v %s", err, out)
	}
	// connect and disconnect: a container on the default bridge joins
	// appnet as eth1, finds db by name there, and leaves it.
	d.berthOK(t, "run", "-d", "--name", "client", "busybox", "sleep", "600")
	d.dockerOK(t, "network", "connect", "appnet", "client")
	out = d.berthOK(t, "exec", "client", "sh", "-c", "ls /sys/class/net | sort | tr '\n' ' '; busybox wget -qO- http://db/hostname")
	if out != "eth0 eth1 lo "+id+"\n" {
		t.Errorf("after connect: %q", out)
	}
	if nets := d.dockerOK(t, "inspect", "-f", "{{len .NetworkSettings.Networks}}", "client"); strings.TrimSpace(nets) != "2" {
		t.Errorf("client's networks: %s", nets)
	}
	if out, err := d.docker(t, "", "network", "disconnect", "bridge", "client"); err == nil || !strings.Contains(out, "runs on network bridge") {
		t.Errorf("disconnecting the network a container runs on: %v %s", err, out)
	}
	d.berthOK(t, "network", "disconnect", "appnet", "client")
	if out := d.berthOK(t, "exec", "client", "sh", "-c", "ls /sys/class/net | sort | tr '\n' ' '; grep -cw db /etc/hosts || true"); out != "eth0 lo 0\n" {
		t.Errorf("after disconnect: %q", out)
	}
	d.berthOK(t, "rm", "-f", "db", "client")
	d.dockerOK(t, "network", "create", "unused")
	d.berthOK(t, "create", "--name", "holder", "--network", "appnet", "busybox", "true")
	if out := d.dockerOK(t, "network", "prune", "-f"); !strings.Contains(out, "unused") || strings.Contains(out, "appnet") {
		t.Errorf("network prune should remove unused only (a stopped container holds appnet):\n%s", out)
	}
	d.berthOK(t, "rm", "holder")
	d.dockerOK(t, "network", "rm", "appnet")
	if out, err := exec.Command("iptables", "-t", "nat", "-S").CombinedOutput(); err == nil && strings.Contains(string(out), subnet) {
		t.Errorf("rules of the removed network left:\n%s", grepLines(string(out), subnet))
	}
}
