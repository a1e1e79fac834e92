package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/events"
	nettypes "github.com/moby/moby/api/types/network"

	"github.com/berth-containers/berth/pkg/daemon"
	"github.com/berth-containers/berth/pkg/network"
)

// NetworkBackend manages bridge networks.
type NetworkBackend interface {
	Networks() []*network.Network
	Network(ref string) (*network.Network, error)
	NetworkCreate(name, subnet string, labels map[string]string) (*network.Network, error)
	NetworkRemove(ref string) error
	NetworkEndpoints(name string) []*network.Endpoint
	NetworkConnect(ctr *daemon.Container, netName string) error
	NetworkDisconnect(ctr *daemon.Container, netName string) error
	NetworksPrune() ([]string, error)
}

// The networks that are modes rather than bridges, as Docker lists them.
var modeNetworks = []nettypes.Network{
	{Name: "host", ID: "host", Scope: "local", Driver: "host", EnableIPv4: true},
	{Name: "none", ID: "none", Scope: "local", Driver: "null"},
}

func networkSummary(n *network.Network) nettypes.Network {
	subnet, _ := netip.ParsePrefix(n.Subnet())
	gw, _ := netip.ParseAddr(n.GatewayIP())
	labels := n.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	return nettypes.Network{Name: n.Name, ID: n.ID, Created: n.Created, Scope: "local", Driver: "bridge", EnableIPv4: true,
		IPAM:    nettypes.IPAM{Driver: "default", Config: []nettypes.IPAMConfig{{Subnet: subnet, Gateway: gw}}},
		Options: map[string]string{"com.docker.network.bridge.name": n.Bridge}, Labels: labels}
}

func (s *Server) listNetworks(_ context.Context, w http.ResponseWriter, _ *http.Request, _ map[string]string) error {
	out := []nettypes.Summary{}
	for _, n := range s.b.Networks() {
		out = append(out, nettypes.Summary{Network: networkSummary(n)})
	}
	for _, n := range modeNetworks {
		out = append(out, nettypes.Summary{Network: n})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) inspectNetwork(_ context.Context, w http.ResponseWriter, _ *http.Request, vars map[string]string) error {
	for _, n := range modeNetworks {
		if vars["id"] == n.Name {
			return writeJSON(w, http.StatusOK, nettypes.Inspect{Network: n, Containers: map[string]nettypes.EndpointResource{}})
		}
	}
	n, err := s.b.Network(vars["id"])
	if err != nil {
		return err
	}
	resp := nettypes.Inspect{Network: networkSummary(n), Containers: map[string]nettypes.EndpointResource{}}
	for _, ep := range s.b.NetworkEndpoints(n.Name) {
		res := nettypes.EndpointResource{EndpointID: ep.ID}
		if ctr, err := s.b.Container(ep.ID); err == nil {
			res.Name = ctr.Name
		}
		if a, err := netip.ParseAddr(ep.IP); err == nil {
			res.IPv4Address = netip.PrefixFrom(a, ep.Prefix)
		}
		if mac, err := net.ParseMAC(ep.MAC); err == nil {
			res.MacAddress = nettypes.HardwareAddr(mac)
		}
		resp.Containers[ep.ID] = res
	}
	return writeJSON(w, http.StatusOK, resp)
}

func (s *Server) createNetwork(_ context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	var req nettypes.CreateRequest
	if err := decodeJSON(r, w, &req); err != nil {
		return err
	}
	if req.Driver != "" && req.Driver != "bridge" {
		return errBadRequestf("network driver %q is not supported: berth makes bridge networks", req.Driver)
	}
	if req.Internal || req.ConfigOnly || req.ConfigFrom != nil || (req.EnableIPv6 != nil && *req.EnableIPv6) {
		return errBadRequestf("internal, config-only and IPv6 networks are not supported")
	}
	subnet := ""
	if req.IPAM != nil && len(req.IPAM.Config) > 0 {
		if len(req.IPAM.Config) > 1 {
			return errBadRequestf("one subnet per network is supported")
		}
		c := req.IPAM.Config[0]
		if c.IPRange.IsValid() || c.Gateway.IsValid() || len(c.AuxAddress) > 0 {
			return errBadRequestf("--ip-range, --gateway and --aux-address are not supported: the gateway is the subnet's first address")
		}
		if c.Subnet.IsValid() {
			subnet = c.Subnet.String()
		}
	}
	n, err := s.b.NetworkCreate(req.Name, subnet, req.Labels)
	if err != nil {
		return err
	}
	s.networkEvent("create", n)
	return writeJSON(w, http.StatusCreated, nettypes.CreateResponse{ID: n.ID})
}

func (s *Server) removeNetwork(_ context.Context, w http.ResponseWriter, _ *http.Request, vars map[string]string) error {
	for _, n := range modeNetworks {
		if vars["id"] == n.Name {
			return fmt.Errorf("%s is a pre-defined network and cannot be removed: %w", n.Name, errdefs.ErrPermissionDenied)
		}
	}
	n, err := s.b.Network(vars["id"])
	if err != nil {
		return err
	}
	if err := s.b.NetworkRemove(n.ID); err != nil {
		return err
	}
	s.networkEvent("destroy", n)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// networkEvent publishes a network event, as Docker names them.
func (s *Server) networkEvent(action events.Action, n *network.Network) {
	s.eventBus.Publish(events.NetworkEventType, action, n.ID, map[string]string{"name": n.Name, "type": "bridge"})
}

func (s *Server) connectNetwork(_ context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	var req nettypes.ConnectRequest
	if err := decodeJSON(r, w, &req); err != nil {
		return err
	}
	if ec := req.EndpointConfig; ec != nil && ((ec.IPAMConfig != nil && (ec.IPAMConfig.IPv4Address.IsValid() || ec.IPAMConfig.IPv6Address.IsValid())) ||
		len(ec.Aliases) > 0 || len(ec.Links) > 0) {
		return errBadRequestf("--ip, --alias and --link are not supported")
	}
	return s.networkChange(w, vars["id"], req.Container, "connect", s.b.NetworkConnect)
}

func (s *Server) disconnectNetwork(_ context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	var req nettypes.DisconnectRequest
	if err := decodeJSON(r, w, &req); err != nil {
		return err
	}
	return s.networkChange(w, vars["id"], req.Container, "disconnect", s.b.NetworkDisconnect)
}

// networkChange connects or disconnects a container, as the request's
// route and body name them.
func (s *Server) networkChange(w http.ResponseWriter, netRef, ctrRef string, action events.Action, fn func(*daemon.Container, string) error) error {
	n, err := s.b.Network(netRef)
	if err != nil {
		return err
	}
	ctr, err := s.b.Container(ctrRef)
	if err != nil {
		return err
	}
	if err := fn(ctr, n.Name); err != nil {
		return err
	}
	s.eventBus.Publish(events.NetworkEventType, action, n.ID, map[string]string{"name": n.Name, "type": "bridge", "container": ctr.ID})
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) pruneNetworks(_ context.Context, w http.ResponseWriter, _ *http.Request, _ map[string]string) error {
	removed, err := s.b.NetworksPrune()
	if err != nil {
		return err
	}
	report := nettypes.PruneReport{NetworksDeleted: []string{}}
	report.NetworksDeleted = append(report.NetworksDeleted, removed...)
	for _, name := range removed {
		s.eventBus.Publish(events.NetworkEventType, "destroy", name, map[string]string{"name": name, "type": "bridge"})
	}
	return writeJSON(w, http.StatusOK, report)
}
