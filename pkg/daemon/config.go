package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/docker/go-units"
)

// Config is berthd's configuration: flags over /etc/berth/daemon.json over
// these defaults.
type Config struct {
	Root               string   `json:"data-root,omitempty"`
	Hosts              []string `json:"hosts,omitempty"`
	Group              string   `json:"group,omitempty"`
	LogLevel           string   `json:"log-level,omitempty"`
	InsecureRegistries []string `json:"insecure-registries,omitempty"`
	// CgroupParent holds the containers' cgroups: PARENT/ID.
	CgroupParent string `json:"cgroup-parent,omitempty"`
	// LogOpts rotate containers' json-file logs: max-size ("10m") and
	// max-file ("3"), as Docker's json-file driver.
	LogOpts map[string]string `json:"log-opts,omitempty"`
	// DefaultUlimits apply to containers that do not set that limit.
	DefaultUlimits map[string]*units.Ulimit `json:"default-ulimits,omitempty"`
	// Bridge names the default bridge network's link; BIP is its
	// address and subnet, as Docker's "bridge" and "bip".
	Bridge string `json:"bridge,omitempty"`
	BIP    string `json:"bip,omitempty"`
	// CDISpecDirs replace the CDI directories (/etc/cdi, /var/run/cdi).
	CDISpecDirs []string `json:"cdi-spec-dirs,omitempty"`
	// NvidiaDriverRoot is where the NVIDIA driver's files are found when
	// no CDI spec describes the GPUs ("/"; a driver container's root).
	NvidiaDriverRoot string `json:"nvidia-driver-root,omitempty"`
	// TLSVerify serves tcp:// hosts with mutual TLS: TLSCert and TLSKey
	// are berthd's, and clients must show a certificate TLSCACert signed.
	// Without it berthd refuses to listen on TCP.
	TLSVerify bool   `json:"tlsverify,omitempty"`
	TLSCACert string `json:"tlscacert,omitempty"`
	TLSCert   string `json:"tlscert,omitempty"`
	TLSKey    string `json:"tlskey,omitempty"`
}

// Log rotation unless configured: a shared workstation's disk is not
// filled by one chatty container (Docker's json-file keeps all).
const (
	DefaultLogMaxSize  = "10m"
	DefaultLogMaxFiles = "3"
)

// logRotation reads max-size and max-file.
func (c Config) logRotation() (int64, int, error) {
	size, files := DefaultLogMaxSize, DefaultLogMaxFiles
	for k, v := range c.LogOpts {
		switch k {
		case "max-size":
			size = v
		case "max-file":
			files = v
		default:
			return 0, 0, fmt.Errorf("log-opts: unknown option %q (max-size, max-file)", k)
		}
	}
	n, err := units.RAMInBytes(size)
	if err != nil || n < 0 {
		return 0, 0, fmt.Errorf("log-opts max-size %q: want a size such as 10m", size)
	}
	m, err := strconv.Atoi(files)
	if err != nil || m < 1 {
		return 0, 0, fmt.Errorf("log-opts max-file %q: want a number of at least 1", files)
	}
	return n, m, nil
}

// Defaults.
const (
	DefaultRoot         = "/var/lib/berth"
	DefaultHost         = "unix:///run/berth/berth.sock"
	DefaultGroup        = "berth"
	DefaultConfigFile   = "/etc/berth/daemon.json"
	DefaultCgroupParent = "/berth"
	DefaultBridge       = "berth0"
	// DefaultBIP is away from Docker's 172.17.0.0/16 and Podman's
	// 10.88.0.0/16, so berth can run beside them.
	DefaultBIP = "10.89.0.1/16"
	// The mutual TLS files, as scripts/gen-certs writes them.
	DefaultTLSCACert = "/etc/berth/tls/ca.pem"
	DefaultTLSCert   = "/etc/berth/tls/server-cert.pem"
	DefaultTLSKey    = "/etc/berth/tls/server-key.pem"
)

// LoadConfigFile reads a daemon.json (Docker's key names); a missing file
// at the default path is no error.
func LoadConfigFile(path string, explicit bool) (Config, error) {
	var c Config
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("config file: %w", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config file %s: %w", path, err)
	}
	return c, nil
}

// Merge fills the unset fields of c from other, then from the defaults.
func (c Config) Merge(other Config) Config {
	if c.Root == "" {
		c.Root = other.Root
	}
	if len(c.Hosts) == 0 {
		c.Hosts = other.Hosts
	}
	if c.Group == "" {
		c.Group = other.Group
	}
	if c.LogLevel == "" {
		c.LogLevel = other.LogLevel
	}
	if c.CgroupParent == "" {
		c.CgroupParent = other.CgroupParent
	}
	if c.CgroupParent == "" {
		c.CgroupParent = DefaultCgroupParent
	}
	c.InsecureRegistries = append(c.InsecureRegistries, other.InsecureRegistries...)
	for k, v := range other.LogOpts {
		if _, ok := c.LogOpts[k]; !ok {
			if c.LogOpts == nil {
				c.LogOpts = map[string]string{}
			}
			c.LogOpts[k] = v
		}
	}
	for k, v := range other.DefaultUlimits {
		if _, ok := c.DefaultUlimits[k]; !ok {
			if c.DefaultUlimits == nil {
				c.DefaultUlimits = map[string]*units.Ulimit{}
			}
			c.DefaultUlimits[k] = v
		}
	}
	if c.Root == "" {
		c.Root = DefaultRoot
	}
	if len(c.Hosts) == 0 {
		c.Hosts = []string{DefaultHost}
	}
	if c.Group == "" {
		c.Group = DefaultGroup
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Bridge == "" {
		c.Bridge = other.Bridge
	}
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if c.BIP == "" {
		c.BIP = other.BIP
	}
	if c.BIP == "" {
		c.BIP = DefaultBIP
	}
	if len(c.CDISpecDirs) == 0 {
		c.CDISpecDirs = other.CDISpecDirs
	}
	if c.NvidiaDriverRoot == "" {
		c.NvidiaDriverRoot = other.NvidiaDriverRoot
	}
	c.TLSVerify = c.TLSVerify || other.TLSVerify
	for _, f := range []struct {
		v         *string
		file, def string
	}{
		{&c.TLSCACert, other.TLSCACert, DefaultTLSCACert},
		{&c.TLSCert, other.TLSCert, DefaultTLSCert},
		{&c.TLSKey, other.TLSKey, DefaultTLSKey},
	} {
		if *f.v == "" {
			*f.v = f.file
		}
		if *f.v == "" {
			*f.v = f.def
		}
	}
	return c
}
