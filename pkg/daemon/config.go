package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// Config is berthd's configuration: flags over /etc/berth/daemon.json over
// these defaults.
type Config struct {
	Root               string   `json:"data-root,omitempty"`
	Hosts              []string `json:"hosts,omitempty"`
	Group              string   `json:"group,omitempty"`
	LogLevel           string   `json:"log-level,omitempty"`
	InsecureRegistries []string `json:"insecure-registries,omitempty"`
}

// Defaults.
const (
	DefaultRoot       = "/var/lib/berth"
	DefaultHost       = "unix:///run/berth/berth.sock"
	DefaultGroup      = "berth"
	DefaultConfigFile = "/etc/berth/daemon.json"
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
	c.InsecureRegistries = append(c.InsecureRegistries, other.InsecureRegistries...)
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
	return c
}
