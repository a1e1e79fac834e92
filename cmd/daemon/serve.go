package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/berth-containers/berth/internal/version"
	"github.com/berth-containers/berth/pkg/api/server"
	"github.com/berth-containers/berth/pkg/daemon"
)

// serveFlags are berthd's own flags, for running the daemon.
type serveFlags struct {
	cfg        daemon.Config
	configFile string
}

func (f *serveFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.cfg.Root, "root", "", "data directory (default "+daemon.DefaultRoot+")")
	fl.StringArrayVarP(&f.cfg.Hosts, "host", "H", nil, "address to serve the API on: unix://PATH, fd:// (systemd) or tcp://ADDR:2376 with --tlsverify (repeatable; default "+daemon.DefaultHost+")")
	fl.StringVar(&f.cfg.Group, "group", "", "group owning the API socket (default "+daemon.DefaultGroup+")")
	fl.StringVar(&f.cfg.LogLevel, "log-level", "", "debug, info, warn or error (default info)")
	fl.StringSliceVar(&f.cfg.InsecureRegistries, "insecure-registry", nil, "registry (host:port) that may be reached over plain HTTP")
	fl.StringVar(&f.cfg.CgroupParent, "cgroup-parent", "", "cgroup that holds the containers' cgroups (default "+daemon.DefaultCgroupParent+")")
	fl.StringToStringVar(&f.cfg.LogOpts, "log-opt", nil, "container log rotation: max-size=10m, max-file=3")
	fl.Var(&ulimitFlag{&f.cfg.DefaultUlimits}, "default-ulimit", "default ulimit for containers: NAME=SOFT[:HARD] (repeatable)")
	fl.StringVar(&f.cfg.Bridge, "bridge", "", "link name of the default bridge network (default "+daemon.DefaultBridge+")")
	fl.StringVar(&f.cfg.BIP, "bip", "", "the bridge's address and subnet (default "+daemon.DefaultBIP+")")
	fl.StringArrayVar(&f.cfg.CDISpecDirs, "cdi-spec-dir", nil, "directory of CDI specs, replacing /etc/cdi and /var/run/cdi (repeatable)")
	fl.StringVar(&f.cfg.NvidiaDriverRoot, "nvidia-driver-root", "", "root of the NVIDIA driver's files, for GPUs no CDI spec describes (default /)")
	fl.BoolVar(&f.cfg.TLSVerify, "tlsverify", false, "serve tcp:// hosts with mutual TLS: clients need a certificate signed by --tlscacert")
	fl.StringVar(&f.cfg.TLSCACert, "tlscacert", "", "CA that signs client certificates (default "+daemon.DefaultTLSCACert+")")
	fl.StringVar(&f.cfg.TLSCert, "tlscert", "", "berthd's TLS certificate (default "+daemon.DefaultTLSCert+")")
	fl.StringVar(&f.cfg.TLSKey, "tlskey", "", "berthd's TLS key (default "+daemon.DefaultTLSKey+")")
	fl.StringVar(&f.configFile, "config-file", daemon.DefaultConfigFile, "daemon configuration file")
}

func (f *serveFlags) run(cmd *cobra.Command, _ []string) error {
	file, err := daemon.LoadConfigFile(f.configFile, cmd.Flags().Changed("config-file"))
	if err != nil {
		return err
	}
	cfg := f.cfg.Merge(file)
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", cfg.LogLevel, err)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	d, err := daemon.New(cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.Info("berthd started", "version", version.Version, "root", cfg.Root)
	err = d.Serve(ctx, server.New(d, version.Version).Handler())
	slog.Info("berthd stopped")
	return err
}

// ulimitFlag collects --default-ulimit NAME=SOFT[:HARD].
type ulimitFlag struct{ m *map[string]*units.Ulimit }

func (u *ulimitFlag) String() string { return "" }
func (u *ulimitFlag) Type() string   { return "ulimit" }
func (u *ulimitFlag) Set(v string) error {
	l, err := units.ParseUlimit(v)
	if err != nil {
		return err
	}
	if *u.m == nil {
		*u.m = map[string]*units.Ulimit{}
	}
	(*u.m)[l.Name] = l
	return nil
}
