package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	nettypes "github.com/moby/moby/api/types/network"

	"github.com/berth-containers/berth/pkg/daemon"
	"github.com/berth-containers/berth/pkg/logs"
	"github.com/berth-containers/berth/pkg/network"
	"github.com/berth-containers/berth/pkg/shim"
)

// ContainerBackend is what the container routes need; *daemon.Daemon is one.
type ContainerBackend interface {
	ContainerCreate(ctx context.Context, name string, cfg *container.Config, hc *container.HostConfig) (*daemon.Container, error)
	Container(ref string) (*daemon.Container, error)
	Containers() ([]*daemon.Container, error)
	ContainerState(ctr *daemon.Container) daemon.ContainerState
	ContainerStart(ctx context.Context, ctr *daemon.Container) error
	ContainerWait(ctx context.Context, ctr *daemon.Container, condition container.WaitCondition) (daemon.ContainerState, error)
	ContainerKill(ctr *daemon.Container, sig syscall.Signal) error
	ContainerStop(ctx context.Context, ctr *daemon.Container, timeout time.Duration) error
	ContainerRemove(ctx context.Context, ctr *daemon.Container, force bool) error
	ContainerLog(ctr *daemon.Container) string
	ContainerAttach(ctr *daemon.Container, o shim.AttachOptions) *daemon.Attachment
	ContainerResize(ctr *daemon.Container, height, width uint16) error
	ContainerRename(ctr *daemon.Container, name string) error
	// ContainerSizeRw is the size of the container's writable layer.
	ContainerSizeRw(ctr *daemon.Container) int64
	// ContainerEndpoints are a running container's places on networks: the
	// one it runs on (eth0, with the published ports) first.
	ContainerEndpoints(ctr *daemon.Container) []*network.Endpoint
}

func (s *Server) createContainer(ctx context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	var req container.CreateRequest
	if err := decodeJSON(r, w, &req); err != nil {
		return err
	}
	if req.Config == nil {
		return errBadRequestf("config cannot be empty in order to create a container")
	}
	ctr, err := s.b.ContainerCreate(ctx, r.URL.Query().Get("name"), req.Config, req.HostConfig)
	if err != nil {
		return err
	}
	s.containerEvent("create", ctr)
	return writeJSON(w, http.StatusCreated, container.CreateResponse{ID: ctr.ID, Warnings: []string{}})
}

func (s *Server) containerEvent(action string, ctr *daemon.Container) {
	s.eventBus.Publish(events.ContainerEventType, events.Action(action), ctr.ID, map[string]string{"name": ctr.Name, "image": ctr.ImageRef})
}

func (s *Server) startContainer(ctx context.Context, w http.ResponseWriter, _ *http.Request, vars map[string]string) error {
	return s.containerAction(w, vars["id"], "start", func(ctr *daemon.Container) error { return s.b.ContainerStart(ctx, ctr) })
}

// containerAction runs fn on the container a route names, publishes the
// event and answers 204.
func (s *Server) containerAction(w http.ResponseWriter, id, event string, fn func(*daemon.Container) error) error {
	ctr, err := s.b.Container(id)
	if err != nil {
		return err
	}
	if err := fn(ctr); err != nil {
		return err
	}
	s.containerEvent(event, ctr)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// waitContainer flushes the headers at once (the docker CLI waits before
// it starts), then answers when the condition is met.
func (s *Server) waitContainer(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctr, err := s.b.Container(vars["id"])
	if err != nil {
		return err
	}
	cond := container.WaitCondition(r.URL.Query().Get("condition"))
	switch cond {
	case "":
		cond = container.WaitConditionNotRunning
	case container.WaitConditionNotRunning, container.WaitConditionNextExit, container.WaitConditionRemoved:
	default:
		return errBadRequestf("invalid condition %q", cond)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	st, err := s.b.ContainerWait(ctx, ctr, cond)
	resp := container.WaitResponse{StatusCode: int64(st.ExitCode)}
	if err != nil {
		resp.Error = &container.WaitExitError{Message: err.Error()}
	}
	return json.NewEncoder(w).Encode(resp)
}

// frame writes one chunk of Docker's multiplexed stream: the stream (1
// stdout, 2 stderr), three zero bytes, the length, the bytes.
func frame(w io.Writer, stream string, p []byte) error {
	hdr := [8]byte{1}
	if stream == "stderr" {
		hdr[0] = 2
	}
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(p)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// logWriter writes log entries raw (a terminal) or framed.
func logWriter(w io.Writer, tty, timestamps bool, streams map[string]bool) func(logs.Entry) error {
	return func(e logs.Entry) error {
		if !streams[e.Stream] {
			return nil
		}
		line := e.Log
		if timestamps {
			line = e.Time.Format(time.RFC3339Nano) + " " + line
		}
		var err error
		if tty {
			_, err = io.WriteString(w, line)
		} else {
			err = frame(w, e.Stream, []byte(line))
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		return err
	}
}

// doneWhenStopped is closed once the container is not running.
func (s *Server) doneWhenStopped(ctx context.Context, ctr *daemon.Container, condition container.WaitCondition) chan struct{} {
	done := make(chan struct{})
	go func() {
		_, _ = s.b.ContainerWait(ctx, ctr, condition)
		close(done)
	}()
	return done
}

func (s *Server) containerLogs(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctr, err := s.b.Container(vars["id"])
	if err != nil {
		return err
	}
	q := r.URL.Query()
	streams := map[string]bool{"stdout": boolParam(q.Get("stdout")), "stderr": boolParam(q.Get("stderr"))}
	if !streams["stdout"] && !streams["stderr"] {
		return errBadRequestf("you must choose at least one stream")
	}
	opts := logs.ReadOptions{Tail: -1, Follow: boolParam(q.Get("follow"))}
	if t := q.Get("tail"); t != "" && t != "all" {
		if opts.Tail, err = strconv.Atoi(t); err != nil {
			return errBadRequestf("tail %q: want a number or all", t)
		}
	}
	if opts.Since, err = parseTime(q.Get("since")); err != nil {
		return err
	}
	if opts.Until, err = parseTime(q.Get("until")); err != nil {
		return err
	}
	if opts.Follow {
		opts.Done = s.doneWhenStopped(ctx, ctr, container.WaitConditionNotRunning)
	}
	tty := ctr.Config.Tty
	if tty {
		w.Header().Set("Content-Type", "application/vnd.docker.raw-stream")
	} else {
		w.Header().Set("Content-Type", "application/vnd.docker.multiplexed-stream")
	}
	w.WriteHeader(http.StatusOK)
	return logs.Read(ctx, s.b.ContainerLog(ctr), opts, logWriter(w, tty, boolParam(q.Get("timestamps")), streams))
}

// attachContainer takes over the connection and joins it to the
// container's streams, through its shim: stdin in, output out (raw for a
// terminal, multiplexed otherwise) until the container ends or the client
// detaches. With logs=1 the log so far comes first.
func (s *Server) attachContainer(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctr, err := s.b.Container(vars["id"])
	if err != nil {
		return err
	}
	q := r.URL.Query()
	opts := shim.AttachOptions{Stdin: boolParam(q.Get("stdin")) && ctr.Config.OpenStdin,
		Stdout: boolParam(q.Get("stdout")), Stderr: boolParam(q.Get("stderr"))}
	keys := defaultDetachKeys
	if v := q.Get("detachKeys"); v != "" {
		if keys, err = parseDetachKeys(v); err != nil {
			return errBadRequestf("%v", err)
		}
	}
	// The place is claimed before the client hears 101 and goes on to
	// start the container.
	att := s.b.ContainerAttach(ctr, opts)
	conn, buf, err := hijack(w, r, ctr.Config.Tty)
	if err != nil {
		att.Close()
		return err
	}
	defer conn.Close()
	// The request's context ends with the hijack; the client's hang-up
	// ends this one.
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	if boolParam(q.Get("logs")) {
		streams := map[string]bool{"stdout": opts.Stdout, "stderr": opts.Stderr}
		_ = logs.Read(actx, s.b.ContainerLog(ctr), logs.ReadOptions{Tail: -1}, logWriter(conn, ctr.Config.Tty, false, streams))
	}
	if !boolParam(q.Get("stream")) && q.Get("stream") != "" {
		return nil
	}
	// A client that breaks the connection before the container starts
	// stops waiting (a half-close is what a client without stdin does).
	if !opts.Stdin {
		go func() {
			if _, err := io.Copy(io.Discard, buf); err != nil {
				cancel()
			}
		}()
	}
	sc, err := att.Conn(actx)
	if err != nil || sc == nil {
		return nil
	}
	pipeStreams(conn, buf, sc, opts.Stdin, keys)
	return nil
}

// hijack takes the connection over and answers 101 (or 200 to a client
// that asked for no upgrade) with the stream's content type.
func hijack(w http.ResponseWriter, r *http.Request, tty bool) (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("connection cannot be taken over")
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	ct := "application/vnd.docker.multiplexed-stream"
	if tty {
		ct = "application/vnd.docker.raw-stream"
	}
	if r.Header.Get("Upgrade") != "" {
		fmt.Fprintf(buf, "HTTP/1.1 101 UPGRADED\r\nContent-Type: %s\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n", ct)
	} else {
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\n\r\n", ct)
	}
	if err := buf.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, buf, nil
}

// pipeStreams joins a client's hijacked connection to a shim's attach
// connection: stdin in (until the client half-closes or types the detach
// keys), output out until the process ends.
func pipeStreams(conn net.Conn, client io.Reader, sc *net.UnixConn, stdin bool, keys []byte) {
	defer sc.Close()
	inDone := make(chan struct{})
	if stdin {
		go func() {
			defer close(inDone)
			err := copyUntilDetach(sc, client, keys)
			if errors.Is(err, errDetached) {
				sc.Close()
				conn.Close()
				return
			}
			_ = sc.CloseWrite()
		}()
	} else {
		close(inDone)
	}
	_, _ = io.Copy(conn, sc)
	// End the output with a half-close and let the client finish: closing
	// with its input unread would reset the connection under its last read.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		select {
		case <-inDone:
		case <-time.After(2 * time.Second):
		}
	}
}

// defaultDetachKeys is Docker's ctrl-p ctrl-q.
var defaultDetachKeys = []byte{16, 17}

var errDetached = errors.New("detached")

// parseDetachKeys reads Docker's "ctrl-p,ctrl-q" form: letters, ctrl-a to
// ctrl-z, ctrl-@, ctrl-[, ctrl-\, ctrl-], ctrl-^, ctrl-_.
func parseDetachKeys(v string) ([]byte, error) {
	var keys []byte
	for _, k := range strings.Split(v, ",") {
		switch {
		case len(k) == 1:
			keys = append(keys, k[0])
		case len(k) == 6 && strings.HasPrefix(strings.ToLower(k), "ctrl-"):
			c := k[5]
			switch {
			case c >= 'a' && c <= 'z':
				keys = append(keys, c-'a'+1)
			case c >= 'A' && c <= 'Z':
				keys = append(keys, c-'A'+1)
			case c >= '@' && c <= '_':
				keys = append(keys, c-'@')
			default:
				return nil, fmt.Errorf("invalid detach key %q", k)
			}
		default:
			return nil, fmt.Errorf("invalid detach key %q", k)
		}
	}
	return keys, nil
}

// copyUntilDetach copies src to dst until src ends or the detach keys
// come in a row; keys that only begin the sequence are passed on once it
// breaks.
func copyUntilDetach(dst io.Writer, src io.Reader, keys []byte) error {
	buf := make([]byte, 32<<10)
	matched := 0
	for {
		n, err := src.Read(buf)
		out := make([]byte, 0, n+len(keys))
		for _, b := range buf[:n] {
			if len(keys) > 0 && b == keys[matched] {
				matched++
				if matched == len(keys) {
					if len(out) > 0 {
						_, _ = dst.Write(out)
					}
					return errDetached
				}
				continue
			}
			out = append(out, keys[:matched]...)
			matched = 0
			if len(keys) > 0 && b == keys[0] {
				matched = 1
				continue
			}
			out = append(out, b)
		}
		if len(out) > 0 {
			if _, werr := dst.Write(out); werr != nil {
				return werr
			}
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func (s *Server) resizeContainer(_ context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctr, err := s.b.Container(vars["id"])
	if err != nil {
		return err
	}
	h, wd, err := terminalSize(r)
	if err != nil {
		return err
	}
	if err := s.b.ContainerResize(ctr, h, wd); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// terminalSize reads the h and w parameters of a resize.
func terminalSize(r *http.Request) (uint16, uint16, error) {
	h, herr := strconv.ParseUint(r.URL.Query().Get("h"), 10, 16)
	w, werr := strconv.ParseUint(r.URL.Query().Get("w"), 10, 16)
	if herr != nil || werr != nil {
		return 0, 0, errBadRequestf("h and w: want the terminal's height and width")
	}
	return uint16(h), uint16(w), nil
}

func (s *Server) restartContainer(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	timeout, err := stopTimeout(r)
	if err != nil {
		return err
	}
	return s.containerAction(w, vars["id"], "restart", func(ctr *daemon.Container) error {
		if err := s.b.ContainerStop(ctx, ctr, timeout); err != nil {
			return err
		}
		return s.b.ContainerStart(ctx, ctr)
	})
}

func (s *Server) renameContainer(_ context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	return s.containerAction(w, vars["id"], "rename", func(ctr *daemon.Container) error {
		return s.b.ContainerRename(ctr, r.URL.Query().Get("name"))
	})
}

// stopTimeout is the t parameter: seconds before SIGKILL (default 10).
func stopTimeout(r *http.Request) (time.Duration, error) {
	t := r.URL.Query().Get("t")
	if t == "" {
		return 10 * time.Second, nil
	}
	n, err := strconv.Atoi(t)
	if err != nil {
		return 0, errBadRequestf("t %q: want seconds", t)
	}
	if n < 0 { // docker: -1 waits forever
		return 24 * 365 * time.Hour, nil
	}
	return time.Duration(n) * time.Second, nil
}

func boolParam(v string) bool { b, _ := strconv.ParseBool(v); return b }

func (s *Server) listContainers(_ context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	q := r.URL.Query()
	all := boolParam(q.Get("all"))
	parsed, err := parseFilters(q.Get("filters"))
	f := filters(parsed)
	if err != nil {
		return err
	}
	for key := range f {
		if !slices.Contains([]string{"status", "name", "id", "label", "ancestor", "exited"}, key) {
			return errBadRequestf("invalid filter %q", key)
		}
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil {
			return errBadRequestf("limit %q: want a number", v)
		}
	}
	ctrs, err := s.b.Containers()
	if err != nil {
		return err
	}
	out := []container.Summary{}
	for _, ctr := range ctrs {
		if limit > 0 && len(out) == limit {
			break
		}
		st := s.b.ContainerState(ctr)
		if !all && len(f["status"]) == 0 && st.Status != container.StateRunning {
			continue
		}
		if !f.match(ctr, st) {
			continue
		}
		sum := containerSummary(ctr, st)
		if eps := s.b.ContainerEndpoints(ctr); len(eps) > 0 {
			sum.NetworkSettings = &container.NetworkSettingsSummary{Networks: map[string]*nettypes.EndpointSettings{}}
			for _, ep := range eps {
				sum.Ports = append(sum.Ports, portSummaries(ep)...)
				sum.NetworkSettings.Networks[ep.Network] = endpointSettings(ep)
			}
		}
		out = append(out, sum)
	}
	return writeJSON(w, http.StatusOK, out)
}

// containerSummary is a container as lists show it.
func containerSummary(ctr *daemon.Container, st daemon.ContainerState) container.Summary {
	sum := container.Summary{ID: ctr.ID, Names: []string{"/" + ctr.Name}, Image: ctr.ImageRef, ImageID: ctr.ImageID.String(),
		Command: strings.Join(append([]string{ctr.Path}, ctr.Args...), " "), Created: ctr.Created.Unix(),
		Labels: ctr.Config.Labels, State: st.Status, Status: statusLine(st), Ports: []container.PortSummary{}}
	sum.Labels = withGPUsLabel(sum.Labels, ctr)
	sum.HostConfig.NetworkMode = string(ctr.HostConfig.NetworkMode)
	return sum
}

// withGPUsLabel is labels plus, for a container holding GPUs (on a copy),
// daemon.GPUsLabel: what every Docker client shows, without new fields.
func withGPUsLabel(labels map[string]string, ctr *daemon.Container) map[string]string {
	if len(ctr.GPUs) == 0 {
		if labels == nil {
			return map[string]string{}
		}
		return labels
	}
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	out[daemon.GPUsLabel] = strings.Join(ctr.GPUs, ",")
	return out
}

// filters are the API's filters parameter: key -> accepted values.
type filters map[string]map[string]bool

// match reports whether a container passes every filter key (any of a
// key's values may match).
func (f filters) match(ctr *daemon.Container, st daemon.ContainerState) bool {
	for key, set := range f {
		ok := slices.ContainsFunc(slices.Collect(maps.Keys(set)), func(v string) bool {
			switch key {
			case "status":
				return v == string(st.Status)
			case "name":
				return strings.Contains(ctr.Name, strings.TrimPrefix(v, "/"))
			case "id":
				return strings.HasPrefix(ctr.ID, v)
			case "label":
				k, want, hasValue := strings.Cut(v, "=")
				got, present := ctr.Config.Labels[k]
				if k == daemon.GPUsLabel && len(ctr.GPUs) > 0 {
					got, present = strings.Join(ctr.GPUs, ","), true
				}
				return present && (!hasValue || got == want)
			case "ancestor":
				return ctr.ImageRef == v || ctr.ImageID.String() == v || strings.HasPrefix(ctr.ImageID.Encoded(), v)
			case "exited":
				return st.Status == container.StateExited && strconv.Itoa(st.ExitCode) == v
			}
			return false
		})
		if !ok {
			return false
		}
	}
	return true
}

// statusLine is docker ps's STATUS column.
func statusLine(st daemon.ContainerState) string {
	switch st.Status {
	case container.StateRunning:
		return "Up " + units.HumanDuration(time.Since(st.StartedAt))
	case container.StateExited:
		return fmt.Sprintf("Exited (%d) %s ago", st.ExitCode, units.HumanDuration(time.Since(st.FinishedAt)))
	case container.StateDead:
		return "Dead"
	}
	return "Created"
}

func (s *Server) inspectContainer(_ context.Context, w http.ResponseWriter, _ *http.Request, vars map[string]string) error {
	ctr, err := s.b.Container(vars["id"])
	if err != nil {
		return err
	}
	st := s.b.ContainerState(ctr)
	state := &container.State{Status: st.Status, Running: st.Status == container.StateRunning, Dead: st.Status == container.StateDead,
		Pid: st.Pid, ExitCode: st.ExitCode, Error: st.Error, OOMKilled: st.OOMKilled,
		StartedAt: timeOrZero(st.StartedAt), FinishedAt: timeOrZero(st.FinishedAt)}
	resp := container.InspectResponse{ID: ctr.ID, Created: ctr.Created.Format(time.RFC3339Nano), Path: ctr.Path, Args: ctr.Args,
		State: state, Image: ctr.ImageID.String(), Name: "/" + ctr.Name, Driver: s.b.StorageDriver(), Platform: "linux",
		LogPath: s.b.ContainerLog(ctr), RestartCount: ctr.RestartCount, Config: ctr.Config, HostConfig: ctr.HostConfig, Mounts: []container.MountPoint{}}
	if len(ctr.GPUs) > 0 {
		cfg := *ctr.Config
		cfg.Labels = withGPUsLabel(cfg.Labels, ctr)
		resp.Config = &cfg
	}
	resp.NetworkSettings = &container.NetworkSettings{Ports: nettypes.PortMap{}, Networks: map[string]*nettypes.EndpointSettings{}}
	for _, ep := range s.b.ContainerEndpoints(ctr) {
		resp.NetworkSettings.Networks[ep.Network] = endpointSettings(ep)
		for _, p := range ep.Ports {
			port, err := nettypes.ParsePort(fmt.Sprintf("%d/%s", p.ContainerPort, p.Proto))
			if err != nil {
				continue
			}
			resp.NetworkSettings.Ports[port] = append(resp.NetworkSettings.Ports[port], nettypes.PortBinding{HostIP: hostAddr(p), HostPort: strconv.Itoa(p.HostPort)})
		}
	}
	return writeJSON(w, http.StatusOK, resp)
}

// endpointSettings is a container's endpoint as Docker describes it.
func endpointSettings(ep *network.Endpoint) *nettypes.EndpointSettings {
	es := &nettypes.EndpointSettings{NetworkID: ep.Network, EndpointID: ep.ID, IPPrefixLen: ep.Prefix}
	es.IPAddress, _ = netip.ParseAddr(ep.IP)
	es.Gateway, _ = netip.ParseAddr(ep.Gateway)
	if mac, err := net.ParseMAC(ep.MAC); err == nil {
		es.MacAddress = nettypes.HardwareAddr(mac)
	}
	return es
}

// portSummaries are ps's PORTS.
func portSummaries(ep *network.Endpoint) []container.PortSummary {
	out := []container.PortSummary{}
	for _, p := range ep.Ports {
		out = append(out, container.PortSummary{IP: hostAddr(p), PrivatePort: uint16(p.ContainerPort), PublicPort: uint16(p.HostPort), Type: p.Proto})
	}
	return out
}

// hostAddr is a published port's host address; "" is every address.
func hostAddr(p network.Port) netip.Addr {
	if p.HostIP == "" {
		return netip.IPv4Unspecified()
	}
	a, _ := netip.ParseAddr(p.HostIP)
	return a
}

func timeOrZero(t time.Time) string {
	if t.IsZero() {
		return "0001-01-01T00:00:00Z"
	}
	return t.Format(time.RFC3339Nano)
}

func (s *Server) removeContainer(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	return s.containerAction(w, vars["id"], "destroy", func(ctr *daemon.Container) error {
		return s.b.ContainerRemove(ctx, ctr, boolParam(r.URL.Query().Get("force")))
	})
}

func (s *Server) stopContainer(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctr, err := s.b.Container(vars["id"])
	if err != nil {
		return err
	}
	timeout, err := stopTimeout(r)
	if err != nil {
		return err
	}
	if st := s.b.ContainerState(ctr); st.Status != container.StateRunning {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	if err := s.b.ContainerStop(ctx, ctr, timeout); err != nil {
		return err
	}
	s.containerEvent("stop", ctr)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) killContainer(_ context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctr, err := s.b.Container(vars["id"])
	if err != nil {
		return err
	}
	sig := syscall.SIGKILL
	if v := r.URL.Query().Get("signal"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			sig = syscall.Signal(n)
		} else if named, ok := signalNames[strings.TrimPrefix(strings.ToUpper(v), "SIG")]; ok {
			sig = named
		} else {
			return errBadRequestf("invalid signal %q", v)
		}
	}
	if err := s.b.ContainerKill(ctr, sig); err != nil {
		return err
	}
	s.containerEvent("kill", ctr)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

var signalNames = map[string]syscall.Signal{"KILL": syscall.SIGKILL, "TERM": syscall.SIGTERM, "INT": syscall.SIGINT,
	"HUP": syscall.SIGHUP, "QUIT": syscall.SIGQUIT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "STOP": syscall.SIGSTOP, "CONT": syscall.SIGCONT}

func (s *Server) pruneContainers(ctx context.Context, w http.ResponseWriter, _ *http.Request, _ map[string]string) error {
	ctrs, err := s.b.Containers()
	if err != nil {
		return err
	}
	report := container.PruneReport{ContainersDeleted: []string{}}
	for _, ctr := range ctrs {
		if s.b.ContainerState(ctr).Status == container.StateRunning {
			continue
		}
		if err := s.b.ContainerRemove(ctx, ctr, false); err != nil {
			return err
		}
		s.containerEvent("destroy", ctr)
		report.ContainersDeleted = append(report.ContainersDeleted, ctr.ID)
	}
	return writeJSON(w, http.StatusOK, report)
}
