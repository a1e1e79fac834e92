package image

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/sys/user"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultPath is the PATH a container gets when its image sets none.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// RunConfig is what an image's config says about running it, after the
// user's overrides, with Docker's rules.
type RunConfig struct {
	Args         []string // Entrypoint followed by Cmd
	Env          []string
	Cwd          string
	User         string
	ExposedPorts []string // "80/tcp"
	Volumes      []string
	StopSignal   string
}

// Overrides are what `docker run` may replace.
type Overrides struct {
	Entrypoint []string // nil: the image's; a --entrypoint also drops the image's Cmd
	Cmd        []string // nil: the image's
	Env        []string // added, replacing the image's values of the same keys
	Cwd        string
	User       string
}

// RunConfigOf combines an image config with a user's overrides.
func RunConfigOf(cfg *v1.ConfigFile, o Overrides) (RunConfig, error) {
	c := cfg.Config
	entrypoint, cmd := c.Entrypoint, c.Cmd
	if o.Entrypoint != nil {
		entrypoint, cmd = o.Entrypoint, nil
	}
	if o.Cmd != nil {
		cmd = o.Cmd
	}
	rc := RunConfig{
		Args: append(slices.Clone(entrypoint), cmd...),
		Env:  mergeEnv(c.Env, o.Env), Cwd: c.WorkingDir, User: c.User, StopSignal: c.StopSignal,
	}
	if len(rc.Args) == 0 {
		return rc, fmt.Errorf("the image has no command (Entrypoint or Cmd) and none was given")
	}
	if o.Cwd != "" {
		rc.Cwd = o.Cwd
	}
	if rc.Cwd == "" {
		rc.Cwd = "/"
	}
	if o.User != "" {
		rc.User = o.User
	}
	for p := range c.ExposedPorts {
		rc.ExposedPorts = append(rc.ExposedPorts, p)
	}
	for v := range c.Volumes {
		rc.Volumes = append(rc.Volumes, v)
	}
	sort.Strings(rc.ExposedPorts)
	sort.Strings(rc.Volumes)
	return rc, nil
}

// mergeEnv overlays extra onto base by key, and adds a PATH if none.
func mergeEnv(base, extra []string) []string {
	out := slices.Clone(base)
	index := map[string]int{}
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		index[k] = i
	}
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := index[k]; ok {
			out[i] = kv
			continue
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	if _, ok := index["PATH"]; !ok {
		out = append([]string{DefaultPath}, out...)
	}
	return out
}

// ApplyToSpec puts rc into a runtime spec for a container whose root
// filesystem is rootfs: args, env, cwd, and the user resolved with the
// image's own /etc/passwd and /etc/group (read inside rootfs only).
func ApplyToSpec(spec *specs.Spec, rc RunConfig, rootfs string) error {
	u, home, err := resolveUser(rootfs, rc.User)
	if err != nil {
		return err
	}
	spec.Process.Args = rc.Args
	spec.Process.Env = rc.Env
	// As Docker: HOME is the user's home from the image's passwd ("/"
	// for a user it does not list), unless the image or the run set it.
	if !slices.ContainsFunc(rc.Env, func(e string) bool { return strings.HasPrefix(e, "HOME=") }) {
		spec.Process.Env = append(slices.Clone(rc.Env), "HOME="+home)
	}
	spec.Process.Cwd = rc.Cwd
	spec.Process.User = u
	return nil
}

// ResolveUser turns "name", "uid", "name:group" or "uid:gid" into ids with
// the files of rootfs. An empty spec is root.
func ResolveUser(rootfs, spec string) (specs.User, error) {
	u, _, err := resolveUser(rootfs, spec)
	return u, err
}

// resolveUser is ResolveUser, also returning the user's home directory.
func resolveUser(rootfs, spec string) (specs.User, string, error) {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return specs.User{}, "", err
	}
	defer root.Close()
	passwd, group := openOrEmpty(root, "etc/passwd"), openOrEmpty(root, "etc/group")
	defer passwd.Close()
	defer group.Close()
	eu, err := user.GetExecUser(spec, &user.ExecUser{Home: "/"}, passwd, group)
	if err != nil {
		return specs.User{}, "", fmt.Errorf("user %q: %w", spec, err)
	}
	out := specs.User{UID: uint32(eu.Uid), GID: uint32(eu.Gid)}
	for _, g := range eu.Sgids {
		if g != eu.Gid {
			out.AdditionalGids = append(out.AdditionalGids, uint32(g))
		}
	}
	return out, eu.Home, nil
}

func openOrEmpty(root *os.Root, name string) io.ReadCloser {
	f, err := root.Open(name)
	if err != nil {
		return io.NopCloser(strings.NewReader(""))
	}
	return f
}
