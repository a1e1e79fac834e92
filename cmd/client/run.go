package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/docker/go-units"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
	"tags.cncf.io/container-device-interface/pkg/parser"

	"github.com/berth-containers/berth/pkg/credentials"
)

// createFlags are docker's create and run flags that berth supports.
type createFlags struct {
	// detached: run -d, which attaches nothing (docker's configs then say
	// so: no Attach*, no StdinOnce, so stdin stays open after an attach).
	detached                                  bool
	name, workdir, user, entrypoint, hostname string
	env, envFiles, volumes, publish, devices  []string
	capAdd, capDrop, ulimits, labels          []string
	memory, memorySwap, shmSize, cpus         string
	cpuShares                                 int64
	cpusetCpus, restart, network, gpus        string
	pidsLimit                                 int64
	interactive, tty, rm, privileged, ro      bool
	publishAll                                bool
	expose                                    []string
}

func (f *createFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	// Flags after the image are the command's; -h is --hostname, as in
	// docker, so help is --help alone.
	fl.SetInterspersed(false)
	fl.Bool("help", false, "help for "+cmd.Name())
	fl.StringVar(&f.name, "name", "", "the container's name")
	fl.BoolVarP(&f.interactive, "interactive", "i", false, "keep stdin open and attach it")
	fl.BoolVarP(&f.tty, "tty", "t", false, "give the container a terminal")
	fl.BoolVar(&f.rm, "rm", false, "remove the container when it exits")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable (NAME=VALUE, or NAME to pass ours)")
	fl.StringArrayVar(&f.envFiles, "env-file", nil, "read environment variables from a file")
	fl.StringArrayVarP(&f.volumes, "volume", "v", nil, "bind mount HOST:CONTAINER[:ro]")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the container")
	fl.StringVarP(&f.user, "user", "u", "", "user NAME|UID[:GROUP|GID]")
	fl.StringVar(&f.entrypoint, "entrypoint", "", "override the image's entrypoint")
	fl.StringVarP(&f.hostname, "hostname", "h", "", "the container's host name")
	fl.StringVarP(&f.memory, "memory", "m", "", "memory limit (e.g. 512m)")
	fl.StringVar(&f.memorySwap, "memory-swap", "", "memory plus swap limit (-1: unlimited)")
	fl.StringVar(&f.cpus, "cpus", "", "number of CPUs (e.g. 1.5)")
	fl.Int64VarP(&f.cpuShares, "cpu-shares", "c", 0, "relative CPU weight")
	fl.StringVar(&f.cpusetCpus, "cpuset-cpus", "", "CPUs the container may use (0-3, 0,1)")
	fl.Int64Var(&f.pidsLimit, "pids-limit", 0, "most processes (-1: unlimited)")
	fl.StringVar(&f.shmSize, "shm-size", "", "size of /dev/shm (e.g. 64m)")
	fl.StringVar(&f.restart, "restart", "no", "restart policy: no, on-failure[:N], always, unless-stopped")
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a port: [IP:][HOSTPORT:]PORT[/PROTO]")
	fl.BoolVarP(&f.publishAll, "publish-all", "P", false, "publish every exposed port on a free host port")
	fl.StringArrayVar(&f.expose, "expose", nil, "expose a port (PORT[/PROTO]) without publishing it")
	fl.StringVar(&f.network, "network", "", "network: bridge, none, host")
	fl.StringVar(&f.gpus, "gpus", "", `GPUs to pass: "all", a count (the least used), "device=0,1" (index or UUID), capabilities=compute,video`)
	fl.StringArrayVar(&f.devices, "device", nil, "host device HOST[:CONTAINER[:rwm]], or a CDI device vendor.com/class=name")
	fl.StringArrayVar(&f.capAdd, "cap-add", nil, "add a capability")
	fl.StringArrayVar(&f.capDrop, "cap-drop", nil, "drop a capability")
	fl.StringArrayVar(&f.ulimits, "ulimit", nil, "ulimit NAME=SOFT[:HARD]")
	fl.StringArrayVarP(&f.labels, "label", "l", nil, "label KEY=VALUE")
	fl.BoolVar(&f.privileged, "privileged", false, "give the container every capability and device")
	fl.BoolVar(&f.ro, "read-only", false, "mount the root filesystem read-only")
}

// configs turns the flags and IMAGE [COMMAND...] into the API's configs.
func (f *createFlags) configs(args []string) (*container.Config, *container.HostConfig, error) {
	cfg := &container.Config{Image: args[0], Cmd: args[1:], Tty: f.tty, OpenStdin: f.interactive,
		AttachStdin: f.interactive, AttachStdout: true, AttachStderr: true, StdinOnce: f.interactive,
		WorkingDir: f.workdir, User: f.user, Hostname: f.hostname, Labels: map[string]string{}}
	if f.detached {
		cfg.AttachStdin, cfg.AttachStdout, cfg.AttachStderr, cfg.StdinOnce = false, false, false, false
	}
	if len(cfg.Cmd) == 0 {
		cfg.Cmd = nil
	}
	if f.entrypoint != "" {
		cfg.Entrypoint = []string{f.entrypoint}
	}
	env, err := readEnv(f.envFiles, f.env)
	if err != nil {
		return nil, nil, err
	}
	cfg.Env = env
	for _, l := range f.labels {
		k, v, _ := strings.Cut(l, "=")
		cfg.Labels[k] = v
	}
	hc := &container.HostConfig{AutoRemove: f.rm, Binds: f.volumes, NetworkMode: container.NetworkMode(f.network),
		CapAdd: f.capAdd, CapDrop: f.capDrop, Privileged: f.privileged, ReadonlyRootfs: f.ro, PublishAllPorts: f.publishAll}
	if f.tty && term.IsTerminal(int(os.Stdout.Fd())) {
		// The size from the first instant; resizes follow it.
		if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
			hc.ConsoleSize = [2]uint{uint(h), uint(w)}
		}
	}
	hc.CPUShares = f.cpuShares
	hc.CpusetCpus = f.cpusetCpus
	if f.pidsLimit != 0 {
		hc.PidsLimit = &f.pidsLimit
	}
	for flag, dst := range map[string]*int64{f.memory: &hc.Memory, f.shmSize: &hc.ShmSize} {
		if flag != "" {
			if *dst, err = units.RAMInBytes(flag); err != nil {
				return nil, nil, fmt.Errorf("size %q: %w", flag, err)
			}
		}
	}
	if f.memorySwap == "-1" {
		hc.MemorySwap = -1
	} else if f.memorySwap != "" {
		if hc.MemorySwap, err = units.RAMInBytes(f.memorySwap); err != nil {
			return nil, nil, fmt.Errorf("--memory-swap %q: %w", f.memorySwap, err)
		}
	}
	if f.cpus != "" {
		n, err := strconv.ParseFloat(f.cpus, 64)
		if err != nil || n < 0 {
			return nil, nil, fmt.Errorf("--cpus %q: want a number such as 1.5", f.cpus)
		}
		hc.NanoCPUs = int64(n * 1e9)
	}
	if hc.RestartPolicy, err = parseRestart(f.restart); err != nil {
		return nil, nil, err
	}
	if f.rm && hc.RestartPolicy.Name != container.RestartPolicyDisabled {
		return nil, nil, errors.New("--rm and --restart cannot go together")
	}
	for _, u := range f.ulimits {
		l, err := units.ParseUlimit(u)
		if err != nil {
			return nil, nil, fmt.Errorf("--ulimit %q: %w", u, err)
		}
		hc.Ulimits = append(hc.Ulimits, l)
	}
	for _, d := range f.devices {
		// A CDI name (vendor.com/class=name) is a device request, as the
		// docker CLI sends it.
		if parser.IsQualifiedName(d) {
			hc.DeviceRequests = append(hc.DeviceRequests, container.DeviceRequest{Driver: "cdi", DeviceIDs: []string{d}})
			continue
		}
		parts := strings.Split(d, ":")
		m := container.DeviceMapping{PathOnHost: parts[0], PathInContainer: parts[0], CgroupPermissions: "rwm"}
		if len(parts) > 1 {
			m.PathInContainer = parts[1]
		}
		if len(parts) > 2 {
			m.CgroupPermissions = parts[2]
		}
		if len(parts) > 3 {
			return nil, nil, fmt.Errorf("--device %q: want HOST[:CONTAINER[:rwm]]", d)
		}
		hc.Devices = append(hc.Devices, m)
	}
	if f.gpus != "" {
		req, err := parseGPUs(f.gpus)
		if err != nil {
			return nil, nil, err
		}
		hc.DeviceRequests = append(hc.DeviceRequests, req)
	}
	for _, e := range f.expose {
		port, err := network.ParsePort(e)
		if err != nil {
			return nil, nil, fmt.Errorf("--expose %s: %w", e, err)
		}
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = network.PortSet{}
		}
		cfg.ExposedPorts[port] = struct{}{}
	}
	if len(f.publish) > 0 {
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = network.PortSet{}
		}
		hc.PortBindings = network.PortMap{}
		for _, p := range f.publish {
			ports, bindings, err := parsePublishRange(p)
			if err != nil {
				return nil, nil, err
			}
			for i, port := range ports {
				cfg.ExposedPorts[port] = struct{}{}
				hc.PortBindings[port] = append(hc.PortBindings[port], bindings[i])
			}
		}
	}
	return cfg, hc, nil
}

// readEnv reads --env-file files then -e values; NAME alone takes ours.
func readEnv(files, vars []string) ([]string, error) {
	var env []string
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("--env-file: %w", err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line != "" && !strings.HasPrefix(line, "#") {
				vars = append([]string{line}, vars...)
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--env-file %s: %w", path, err)
		}
	}
	for _, v := range vars {
		if strings.Contains(v, "=") {
			env = append(env, v)
		} else if val, ok := os.LookupEnv(v); ok {
			env = append(env, v+"="+val)
		}
	}
	return env, nil
}

func parseRestart(s string) (container.RestartPolicy, error) {
	name, count, hasCount := strings.Cut(s, ":")
	p := container.RestartPolicy{Name: container.RestartPolicyMode(name)}
	switch p.Name {
	case "", container.RestartPolicyDisabled, container.RestartPolicyAlways, container.RestartPolicyUnlessStopped:
		if hasCount {
			return p, fmt.Errorf("--restart %q: only on-failure takes a count", s)
		}
		if p.Name == "" {
			p.Name = container.RestartPolicyDisabled
		}
	case container.RestartPolicyOnFailure:
		if hasCount {
			n, err := strconv.Atoi(count)
			if err != nil || n < 0 {
				return p, fmt.Errorf("--restart %q: want on-failure:N", s)
			}
			p.MaximumRetryCount = n
		}
	default:
		return p, fmt.Errorf("--restart %q: want no, on-failure[:N], always or unless-stopped", s)
	}
	return p, nil
}

// parseGPUs reads --gpus as docker does: all, N, device=ID[,ID],
// count=N, driver=NAME and capabilities=CAP[,CAP] ("gpu" is implied).
// A list after device= or capabilities= runs to the next key.
func parseGPUs(s string) (container.DeviceRequest, error) {
	req := container.DeviceRequest{}
	caps := []string{"gpu"}
	list := "" // the key whose comma-separated values continue
	for _, field := range strings.Split(strings.Trim(s, `"`), ",") {
		k, v, ok := strings.Cut(field, "=")
		switch {
		case field == "all":
			req.Count = -1
		case ok && k == "device":
			req.DeviceIDs, list = append(req.DeviceIDs, v), k
		case ok && k == "capabilities":
			caps, list = append(caps, v), k
		case ok && k == "count":
			n, err := strconv.Atoi(v)
			if err != nil {
				return req, fmt.Errorf("--gpus %q: count=%q is no number", s, v)
			}
			req.Count, list = n, ""
		case ok && k == "driver":
			req.Driver, list = v, ""
		case !ok && list == "device":
			req.DeviceIDs = append(req.DeviceIDs, field) // device=0,1
		case !ok && list == "capabilities":
			caps = append(caps, field)
		default:
			n, err := strconv.Atoi(field)
			if err != nil || n < 1 {
				return req, fmt.Errorf("--gpus %q: want all, a count, device=ID[,ID] or capabilities=CAP[,CAP]", s)
			}
			req.Count = n
		}
	}
	if req.Count != 0 && len(req.DeviceIDs) > 0 {
		return req, fmt.Errorf("--gpus %q: a count or devices, not both", s)
	}
	if req.Count == 0 && len(req.DeviceIDs) == 0 {
		req.Count = -1 // capabilities= alone: docker takes all GPUs
	}
	req.Capabilities = [][]string{slices.Compact(caps)}
	return req, nil
}

// parsePublish reads -p [IP:][HOSTPORT:]PORT[/PROTO].
// parsePublishRange is parsePublish with a range of container ports
// ("8000-8002:80-82", or "80-82" alone), one binding per port, as docker.
func parsePublishRange(s string) ([]network.Port, []network.PortBinding, error) {
	rest, proto, hasProto := strings.Cut(s, "/")
	cut := strings.LastIndex(rest, ":")
	cports := rest[cut+1:]
	lo, hi, isRange := strings.Cut(cports, "-")
	if !isRange {
		port, b, err := parsePublish(s)
		return []network.Port{port}, []network.PortBinding{b}, err
	}
	first, err1 := strconv.Atoi(lo)
	last, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || last < first {
		return nil, nil, fmt.Errorf("-p %q: invalid range of container ports %q", s, cports)
	}
	host := ""
	if cut >= 0 {
		host = rest[:cut]
	}
	hostIP, hostPorts := "", host
	if i := strings.LastIndex(host, ":"); i >= 0 {
		hostIP, hostPorts = host[:i+1], host[i+1:]
	}
	hlo, hhi, hostRange := strings.Cut(hostPorts, "-")
	hfirst, _ := strconv.Atoi(hlo)
	if hostPorts != "" {
		hlast, err := strconv.Atoi(hhi)
		if !hostRange || err != nil || hlast-hfirst != last-first {
			return nil, nil, fmt.Errorf("-p %q: the host and container port ranges differ in length", s)
		}
	}
	var ports []network.Port
	var bindings []network.PortBinding
	for i := 0; i <= last-first; i++ {
		one := hostIP
		if hostPorts != "" {
			one += strconv.Itoa(hfirst+i) + ":"
		} else if host != "" {
			one += ":"
		}
		one += strconv.Itoa(first + i)
		if hasProto {
			one += "/" + proto
		}
		port, b, err := parsePublish(one)
		if err != nil {
			return nil, nil, err
		}
		ports, bindings = append(ports, port), append(bindings, b)
	}
	return ports, bindings, nil
}

func parsePublish(s string) (network.Port, network.PortBinding, error) {
	var b network.PortBinding
	rest, proto, _ := strings.Cut(s, "/")
	parts := strings.Split(rest, ":")
	if n := len(parts); n > 1 && strings.HasPrefix(parts[0], "[") { // [::1]:8080:80
		ip := strings.Trim(strings.Join(parts[:n-2], ":"), "[]")
		parts = append([]string{ip}, parts[n-2:]...)
	}
	var cport string
	switch len(parts) {
	case 1:
		cport = parts[0]
	case 2:
		b.HostPort, cport = parts[0], parts[1]
	case 3:
		ip, err := netip.ParseAddr(parts[0])
		if err != nil && parts[0] != "" {
			return network.Port{}, b, fmt.Errorf("-p %q: host address %q: %w", s, parts[0], err)
		}
		b.HostIP, b.HostPort, cport = ip, parts[1], parts[2]
	default:
		return network.Port{}, b, fmt.Errorf("-p %q: want [IP:][HOSTPORT:]PORT[/PROTO]", s)
	}
	if proto != "" {
		cport += "/" + proto
	}
	port, err := network.ParsePort(cport)
	if err != nil {
		return network.Port{}, b, fmt.Errorf("-p %q: %w", s, err)
	}
	return port, b, nil
}

func (c *cli) createCmd() *cobra.Command {
	f := &createFlags{}
	cmd := &cobra.Command{
		Use: "create [OPTIONS] IMAGE [COMMAND] [ARG...]", Short: "Create a container", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := c.create(cmd, f, args)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	f.register(cmd)
	return cmd
}

// create makes the container, pulling its image first if it is missing,
// as docker does.
func (c *cli) create(cmd *cobra.Command, f *createFlags, args []string) (string, error) {
	cfg, hc, err := f.configs(args)
	if err != nil {
		return "", err
	}
	api, err := c.client()
	if err != nil {
		return "", err
	}
	opts := client.ContainerCreateOptions{Config: cfg, HostConfig: hc, Name: f.name}
	res, err := api.ContainerCreate(cmd.Context(), opts)
	if errdefs.IsNotFound(err) && strings.Contains(err.Error(), "image") {
		fmt.Fprintf(cmd.ErrOrStderr(), "Unable to find image '%s' locally\n", cfg.Image)
		auth, aerr := credentials.Header(credentials.ConfigDir(), cfg.Image)
		if aerr != nil {
			return "", aerr
		}
		resp, perr := api.ImagePull(cmd.Context(), cfg.Image, client.ImagePullOptions{RegistryAuth: auth})
		if perr != nil {
			return "", perr
		}
		perr = showProgress(resp, cmd.ErrOrStderr())
		resp.Close()
		if perr != nil {
			return "", perr
		}
		res, err = api.ContainerCreate(cmd.Context(), opts)
	}
	if err != nil {
		return "", err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), "WARNING:", w)
	}
	return res.ID, nil
}

func (c *cli) runCmd() *cobra.Command {
	f := &createFlags{}
	var detach bool
	var detachKeys string
	cmd := &cobra.Command{
		Use: "run [OPTIONS] IMAGE [COMMAND] [ARG...]", Short: "Create and run a container", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.detached = detach
			id, err := c.create(cmd, f, args)
			if err != nil {
				return err
			}
			api, _ := c.client()
			ctx := cmd.Context()
			if detach {
				if _, err := api.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), id)
				return nil
			}
			return c.attachAndStart(cmd, id, f.tty, f.interactive, f.rm, detachKeys, true)
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "run in the background and print the ID")
	cmd.Flags().StringVar(&detachKeys, "detach-keys", "", "keys that detach from the container (default ctrl-p,ctrl-q)")
	return cmd
}

// attachAndStart attaches to the container's streams, starts it if start
// is set, copies until it ends and returns its exit code as a
// statusError, as `docker run` and `docker start -a` do.
func (c *cli) attachAndStart(cmd *cobra.Command, id string, tty, stdin, removed bool, detachKeys string, start bool) error {
	api, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	att, err := api.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdin: stdin, Stdout: true, Stderr: true, DetachKeys: detachKeys})
	if err != nil {
		return err
	}
	defer att.Close()
	cond := container.WaitConditionNextExit
	if removed {
		cond = container.WaitConditionRemoved
	}
	wait := api.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: cond})
	if start {
		if _, err := api.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
			return startError(err)
		}
	}
	resize := func(h, w uint) {
		_, _ = api.ContainerResize(ctx, id, client.ContainerResizeOptions{Height: h, Width: w})
	}
	if err := pumpStreams(att.HijackedResponse, tty, stdin, resize); err != nil {
		return err
	}
	// The stream ends after the exit is recorded; a container that still
	// runs was detached from (which takes stdin to type the keys).
	if stdin {
		if res, err := api.ContainerInspect(ctx, id, client.ContainerInspectOptions{}); err == nil && res.Container.State != nil && res.Container.State.Running {
			return nil
		}
	}
	select {
	case res := <-wait.Result:
		if res.Error != nil && res.Error.Message != "" {
			return errors.New(res.Error.Message)
		}
		if res.StatusCode != 0 {
			return statusError(res.StatusCode)
		}
		return nil
	case err := <-wait.Error:
		return err
	}
}

// pumpStreams joins our terminal (or pipes) to a hijacked stream: raw mode
// and window size follow for a terminal; stdin goes in until it ends;
// output comes out, demultiplexed unless a terminal, until the stream ends.
func pumpStreams(att client.HijackedResponse, tty, stdin bool, resize func(h, w uint)) error {
	in, out := os.Stdin, os.Stdout
	if tty {
		if stdin && term.IsTerminal(int(in.Fd())) {
			state, err := term.MakeRaw(int(in.Fd()))
			if err == nil {
				defer func() { _ = term.Restore(int(in.Fd()), state) }()
			}
		}
		if term.IsTerminal(int(out.Fd())) {
			sendSize := func() {
				if w, h, err := term.GetSize(int(out.Fd())); err == nil {
					resize(uint(h), uint(w))
				}
			}
			sendSize()
			winch := make(chan os.Signal, 1)
			signal.Notify(winch, unix.SIGWINCH)
			defer signal.Stop(winch)
			go func() {
				for range winch {
					sendSize()
				}
			}()
		}
	}
	if stdin {
		go func() {
			_, _ = io.Copy(att.Conn, in)
			_ = att.CloseWrite()
		}()
	}
	var err error
	if tty {
		_, err = io.Copy(out, att.Reader)
	} else {
		_, err = stdcopy.StdCopy(out, os.Stderr, att.Reader)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
