package build

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// dispatch runs one instruction on a stage.
func (bs *buildState) dispatch(st *stage, cmd instructions.Command) error {
	// Expansion sees the stage's environment and ARGs; RUN is expanded by
	// its shell instead.
	if ex, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
		env := envGetter(st.env())
		err := ex.Expand(func(word string) (string, error) {
			s, _, err := bs.lex.ProcessWord(word, env)
			return s, err
		})
		if err != nil {
			return err
		}
	}
	switch c := cmd.(type) {
	case *instructions.ArgCommand:
		return bs.arg(st, c)
	case *instructions.RunCommand:
		return bs.run(st, c)
	case *instructions.CopyCommand:
		return bs.copy(st, c, copyRequest{srcs: c.SourcePaths, dest: c.DestPath, from: c.From, chown: c.Chown, chmod: c.Chmod,
			sourceContents: len(c.SourceContents), flags: c.Link || len(c.ExcludePatterns) > 0 || c.Parents})
	case *instructions.AddCommand:
		return bs.copy(st, c, copyRequest{srcs: c.SourcePaths, dest: c.DestPath, chown: c.Chown, chmod: c.Chmod, add: true,
			sourceContents: len(c.SourceContents), flags: c.Link || len(c.ExcludePatterns) > 0 || c.Checksum != "" || c.KeepGitDir != nil || c.Unpack != nil})
	case *instructions.WorkdirCommand:
		return bs.workdir(st, c)
	}
	cfg := st.cfg.DeepCopy()
	if err := applyConfig(st, cfg, cmd); err != nil {
		return err
	}
	return bs.commit(st, bs.cacheKey(st, cmd), cfg, cmdString(cmd), nil)
}

// applyConfig applies an instruction that only changes the image config.
func applyConfig(st *stage, cfg *v1.ConfigFile, cmd instructions.Command) error {
	c := &cfg.Config
	switch cmd := cmd.(type) {
	case *instructions.EnvCommand:
		for _, kv := range cmd.Env {
			c.Env = setEnv(c.Env, kv.Key, kv.Value)
		}
	case *instructions.LabelCommand:
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		for _, kv := range cmd.Labels {
			c.Labels[kv.Key] = kv.Value
		}
	case *instructions.MaintainerCommand:
		cfg.Author = cmd.Maintainer
	case *instructions.ExposeCommand:
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		for _, p := range cmd.Ports {
			ports, err := exposedPorts(p)
			if err != nil {
				return err
			}
			for _, port := range ports {
				c.ExposedPorts[port] = struct{}{}
			}
		}
	case *instructions.UserCommand:
		c.User = cmd.User
	case *instructions.VolumeCommand:
		if c.Volumes == nil {
			c.Volumes = map[string]struct{}{}
		}
		for _, v := range cmd.Volumes {
			if v = strings.TrimSpace(v); v == "" {
				return errors.New("VOLUME specified can not be an empty string")
			}
			c.Volumes[v] = struct{}{}
		}
	case *instructions.StopSignalCommand:
		c.StopSignal = cmd.Signal
	case *instructions.HealthCheckCommand:
		h := cmd.Health
		c.Healthcheck = &v1.HealthConfig{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	case *instructions.OnbuildCommand:
		c.OnBuild = append(c.OnBuild, cmd.Expression)
	case *instructions.CmdCommand:
		c.Cmd = commandLine(st, cmd.ShellDependantCmdLine)
		st.cmdSet = true
	case *instructions.EntrypointCommand:
		c.Entrypoint = commandLine(st, cmd.ShellDependantCmdLine)
		if !st.cmdSet {
			c.Cmd = nil // as Docker: a base image's CMD does not follow a new ENTRYPOINT
		}
	case *instructions.ShellCommand:
		c.Shell = cmd.Shell
	default:
		return fmt.Errorf("the %s instruction is not supported", strings.ToUpper(cmd.Name()))
	}
	return nil
}

func setEnv(env []string, key, value string) []string {
	kv := key + "=" + value
	for i, e := range env {
		if strings.HasPrefix(e, key+"=") {
			out := slices.Clone(env)
			out[i] = kv
			return out
		}
	}
	return append(slices.Clone(env), kv)
}

// exposedPorts turns "80", "80/udp" or "8000-8002/tcp" into "80/tcp"... .
func exposedPorts(spec string) ([]string, error) {
	ports, proto, _ := strings.Cut(spec, "/")
	if proto == "" {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return nil, fmt.Errorf("invalid proto %q in EXPOSE %s", proto, spec)
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	first, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("invalid port %q in EXPOSE %s", lo, spec)
	}
	last := first
	if isRange {
		if last, err = strconv.ParseUint(hi, 10, 16); err != nil || last < first {
			return nil, fmt.Errorf("invalid port range %q in EXPOSE %s", ports, spec)
		}
	}
	var out []string
	for p := first; p <= last; p++ {
		out = append(out, fmt.Sprintf("%d/%s", p, proto))
	}
	return out, nil
}

// shellOf is the stage's SHELL, Docker's default being /bin/sh -c.
func shellOf(st *stage) []string {
	if len(st.cfg.Config.Shell) > 0 {
		return st.cfg.Config.Shell
	}
	return []string{"/bin/sh", "-c"}
}

func commandLine(st *stage, c instructions.ShellDependantCmdLine) []string {
	if c.PrependShell {
		return append(slices.Clone(shellOf(st)), strings.Join(c.CmdLine, " "))
	}
	return c.CmdLine
}

// arg declares build arguments: their value is the --build-arg given,
// else the default, else a meta ARG's of the same name.
func (bs *buildState) arg(st *stage, c *instructions.ArgCommand) error {
	for _, kv := range c.Args {
		v, set := "", false
		if kv.Value != nil {
			v, set = *kv.Value, true
		} else if mv, ok := bs.meta[kv.Key]; ok {
			v, set = mv, true
		}
		if bv, ok := bs.opts.BuildArgs[kv.Key]; ok {
			bs.used[kv.Key] = true
			if bv != nil {
				v, set = *bv, true
			}
		}
		st.args = slices.DeleteFunc(st.args, func(a string) bool { return strings.HasPrefix(a, kv.Key+"=") })
		if set {
			st.args = append(st.args, kv.Key+"="+v)
		}
	}
	return nil
}

// run executes a RUN instruction in a container on the stage's snapshot.
func (bs *buildState) run(st *stage, c *instructions.RunCommand) error {
	if len(c.FlagsUsed) > 0 {
		return fmt.Errorf("RUN --%s is not supported by this builder", c.FlagsUsed[0])
	}
	if len(c.Files) > 0 {
		return errors.New("heredocs in RUN are not supported by this builder")
	}
	args := commandLine(st, c.ShellDependantCmdLine)
	env := st.env()
	// Build args given for the predefined proxy names reach RUN too.
	for _, k := range predefinedArgs {
		if v, ok := bs.opts.BuildArgs[k]; ok && v != nil && !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") }) {
			env = append(env, k+"="+*v)
		}
	}
	key := bs.cacheKey(st, c, append([]string{"network " + bs.opts.Network}, env...)...)
	cfg := st.cfg.DeepCopy()
	return bs.commit(st, key, cfg, "RUN "+strings.Join(args, " "), func(rootfs string) error {
		cwd := st.cfg.Config.WorkingDir
		if cwd == "" {
			cwd = "/"
		}
		if err := mkdirIn(rootfs, cwd); err != nil {
			return err
		}
		// The runner may bind files over these; a mount point it had to
		// make for one is no change of the step's, and is dropped.
		placeholders := missingFiles(rootfs, "etc/hosts", "etc/hostname", "etc/resolv.conf", "etc")
		defer dropEmpty(rootfs, placeholders)
		id := newID()
		fmt.Fprintf(bs.out, " ---> Running in %s\n", id[:12])
		code, err := bs.b.Runner.Run(bs.ctx, RunStep{ID: id, Rootfs: rootfs, Args: args, Env: env, Cwd: cwd,
			User: st.cfg.Config.User, Network: bs.opts.Network, Limits: bs.opts.Limits, Output: bs.out})
		if err != nil {
			return err
		}
		fmt.Fprintf(bs.out, " ---> Removed intermediate container %s\n", id[:12])
		if code != 0 {
			return &RunError{Args: args, Code: code}
		}
		return nil
	})
}

// workdir sets the working directory, made in the image when missing.
func (bs *buildState) workdir(st *stage, c *instructions.WorkdirCommand) error {
	dir := st.inWorkdir(c.Path)
	cfg := st.cfg.DeepCopy()
	cfg.Config.WorkingDir = dir
	return bs.commit(st, bs.cacheKey(st, c), cfg, "WORKDIR "+dir, func(rootfs string) error {
		return mkdirIn(rootfs, dir)
	})
}

// inWorkdir is p, absolute, or relative to the stage's working directory.
func (st *stage) inWorkdir(p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	wd := st.cfg.Config.WorkingDir
	if wd == "" {
		wd = "/"
	}
	return path.Join(wd, p)
}

// missingFiles are those of names (relative) that rootfs lacks.
func missingFiles(rootfs string, names ...string) []string {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil
	}
	defer root.Close()
	var out []string
	for _, n := range names {
		if _, err := root.Lstat(n); err != nil {
			out = append(out, n)
		}
	}
	return out
}

// dropEmpty removes those of names that are now empty regular files or
// empty directories, in order.
func dropEmpty(rootfs string, names []string) {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return
	}
	defer root.Close()
	for _, n := range names {
		fi, err := root.Lstat(n)
		if err == nil && (fi.IsDir() || fi.Mode().IsRegular() && fi.Size() == 0) {
			_ = root.Remove(n) // a directory goes only if empty
		}
	}
}

// mkdirIn makes dir (absolute, in the image) inside rootfs, resolving
// every component inside it.
func mkdirIn(rootfs, dir string) error {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	rel := strings.TrimPrefix(path.Clean(dir), "/")
	if rel == "" {
		return nil
	}
	if fi, err := root.Stat(rel); err == nil && fi.IsDir() {
		return nil
	}
	return root.MkdirAll(rel, 0o755)
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
