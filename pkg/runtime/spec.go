package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	json "github.com/go-json-experiment/json/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/pkg/cgroups"
)

// ErrInvalidSpec marks a bundle or config.json the runtime refuses.
var ErrInvalidSpec = errors.New("invalid spec")

// ValidateID checks a container ID: it names a directory, so no slashes or dots only.
func ValidateID(id string) error {
	if !validID(id) {
		return fmt.Errorf("container id %q: want 1-128 of [a-zA-Z0-9_.-], not starting with . or -: %w", id, ErrInvalidSpec)
	}
	return nil
}

// validID matches ^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$ (no regexp: it would
// be compiled at every berthd start, the container init included).
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i, r := range id {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '_' && r != '.' && r != '-') {
			return false
		}
	}
	return true
}

// LoadSpec reads and validates bundle/config.json.
func LoadSpec(bundle string) (*specs.Spec, error) {
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read bundle config: %w", err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %v: %w", p, err, ErrInvalidSpec)
	}
	if err := Validate(&s, bundle); err != nil {
		return nil, err
	}
	return &s, nil
}

// Validate checks everything that can be checked before any namespace exists,
// so bad input fails early and leaves nothing behind.
func Validate(s *specs.Spec, bundle string) error {
	checks := []func() error{
		func() error { return validateRoot(s, bundle) },
		func() error { return validateProcess(s.Process) },
		func() error { return validateMounts(s.Mounts) },
		func() error { return validateLinux(s.Linux) },
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
		}
	}
	return nil
}

func validateRoot(s *specs.Spec, bundle string) error {
	if s.Root == nil || s.Root.Path == "" {
		return errors.New("root.path is empty")
	}
	rootfs := RootfsPath(s, bundle)
	fi, err := os.Stat(rootfs)
	if err != nil {
		return fmt.Errorf("rootfs %s: %w", rootfs, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("rootfs %s: not a directory", rootfs)
	}
	return nil
}

// RootfsPath is root.path, made absolute against the bundle.
func RootfsPath(s *specs.Spec, bundle string) string {
	if filepath.IsAbs(s.Root.Path) {
		return filepath.Clean(s.Root.Path)
	}
	abs, _ := filepath.Abs(filepath.Join(bundle, s.Root.Path))
	return abs
}

func validateProcess(p *specs.Process) error {
	if p == nil {
		return errors.New("process is missing")
	}
	if len(p.Args) == 0 || p.Args[0] == "" {
		return errors.New("process.args is empty")
	}
	if p.Cwd != "" && !filepath.IsAbs(p.Cwd) {
		return fmt.Errorf("process.cwd %q is not absolute", p.Cwd)
	}
	for _, r := range p.Rlimits {
		if _, ok := rlimitTypes[r.Type]; !ok {
			return fmt.Errorf("process.rlimits: unknown type %q", r.Type)
		}
	}
	if p.Capabilities != nil {
		for _, set := range [][]string{p.Capabilities.Bounding, p.Capabilities.Effective,
			p.Capabilities.Permitted, p.Capabilities.Inheritable, p.Capabilities.Ambient} {
			if _, err := capsFromNames(set); err != nil {
				return err
			}
		}
	}
	return nil
}

func validateMounts(mounts []specs.Mount) error {
	for _, m := range mounts {
		if err := validateDestination(m.Destination); err != nil {
			return fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		if isBind(m) && !filepath.IsAbs(m.Source) {
			return fmt.Errorf("mount %s: bind source %q is not absolute", m.Destination, m.Source)
		}
	}
	return nil
}

// validateDestination refuses relative destinations and any ".." component:
// "/a/../../etc" may clean up to something harmless, but it says the author
// meant to climb, and Docker and runc refuse it too.
func validateDestination(dst string) error {
	if !filepath.IsAbs(dst) {
		return fmt.Errorf("destination %q is not an absolute path", dst)
	}
	for _, part := range strings.Split(dst, "/") {
		if part == ".." {
			return fmt.Errorf("destination %q contains \"..\"", dst)
		}
	}
	return nil
}

func validateLinux(l *specs.Linux) error {
	if l == nil {
		return errors.New("linux section is missing")
	}
	seen := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range l.Namespaces {
		if _, ok := namespaceFlags[ns.Type]; !ok {
			return fmt.Errorf("namespace %q: unknown type", ns.Type)
		}
		if seen[ns.Type] {
			return fmt.Errorf("namespace %q listed twice", ns.Type)
		}
		seen[ns.Type] = true
		if ns.Path != "" && !joinableNamespaces[ns.Type] {
			return fmt.Errorf("namespace %q: joining an existing one by path is not supported", ns.Type)
		}
	}
	if (len(l.UIDMappings) > 0 || len(l.GIDMappings) > 0) && !seen[specs.UserNamespace] {
		return errors.New("uid/gid mappings need a user namespace")
	}
	if seen[specs.UserNamespace] && (len(l.UIDMappings) == 0 || len(l.GIDMappings) == 0) {
		return errors.New("a user namespace needs uidMappings and gidMappings")
	}
	for _, d := range l.Devices {
		if err := validateDestination(d.Path); err != nil {
			return fmt.Errorf("device %s: %w", d.Path, err)
		}
		if !strings.HasPrefix(d.Path, "/dev/") {
			return fmt.Errorf("device %s: path must be under /dev", d.Path)
		}
	}
	for _, p := range append(append([]string{}, l.MaskedPaths...), l.ReadonlyPaths...) {
		if err := validateDestination(p); err != nil {
			return fmt.Errorf("masked or readonly path: %w", err)
		}
	}
	if err := cgroups.ValidatePath(l.CgroupsPath); err != nil {
		return err
	}
	if l.Seccomp != nil {
		if err := validateSeccomp(l.Seccomp); err != nil {
			return err
		}
	}
	return nil
}

func hasNamespace(s *specs.Spec, t specs.LinuxNamespaceType) bool {
	if s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == t {
			return true
		}
	}
	return false
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}
