package runtime

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestParseMountOpts(t *testing.T) {
	got := parseMountOpts([]string{"rbind", "ro", "nosuid", "rslave", "strictatime", "mode=755", "size=1m"})
	want := mountOpts{
		attrSet:     unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_STRICTATIME,
		attrClr:     unix.MOUNT_ATTR__ATIME,
		propagation: unix.MS_SLAVE, recursive: true, data: []string{"mode=755", "size=1m"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(mountOpts{})); diff != "" {
		t.Error(diff)
	}
	if rw := parseMountOpts([]string{"ro", "rw"}); rw.attrSet != 0 || rw.attrClr != unix.MOUNT_ATTR_RDONLY {
		t.Errorf("rw after ro: %+v", rw)
	}
}

func TestValidate(t *testing.T) {
	base := func() *specs.Spec {
		s, err := DefaultSpec("/", "true")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name   string
		mutate func(*specs.Spec)
		ok     bool
	}{
		{"default spec", func(*specs.Spec) {}, true},
		{"no args", func(s *specs.Spec) { s.Process.Args = nil }, false},
		{"relative cwd", func(s *specs.Spec) { s.Process.Cwd = "tmp" }, false},
		{"unknown rlimit", func(s *specs.Spec) { s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_X"}} }, false},
		{"dotdot in masked path", func(s *specs.Spec) { s.Linux.MaskedPaths = []string{"/proc/../etc"} }, false},
		{"device outside /dev", func(s *specs.Spec) { s.Linux.Devices = []specs.LinuxDevice{{Path: "/etc/x", Type: "c"}} }, false},
		{"mappings without userns", func(s *specs.Spec) { s.Linux.UIDMappings = []specs.LinuxIDMapping{{Size: 1}} }, false},
		{"unknown seccomp action", func(s *specs.Spec) { s.Linux.Seccomp.DefaultAction = "SCMP_ACT_NOPE" }, false},
		{"systemd cgroup path", func(s *specs.Spec) { s.Linux.CgroupsPath = "system.slice:berth:x" }, false},
		{"relative bind source", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "rel"})
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.mutate(s)
			err := Validate(s, "/")
			if (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("error %v is not ErrInvalidSpec", err)
			}
		})
	}
}

func TestValidateID(t *testing.T) {
	for id, ok := range map[string]bool{"web-1": true, "a.b_c": true, "": false, "../x": false, "a/b": false, ".x": false} {
		if err := ValidateID(id); (err == nil) != ok {
			t.Errorf("ValidateID(%q) = %v", id, err)
		}
	}
}

func TestDefaultSeccompCompiles(t *testing.T) {
	s, err := DefaultSpec("/", "true")
	if err != nil {
		t.Fatal(err)
	}
	if err := validateSeccomp(s.Linux.Seccomp); err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Seccomp.Syscalls) < 10 || s.Linux.Seccomp.DefaultAction != specs.ActErrno {
		t.Errorf("not Docker's default profile: %+v", s.Linux.Seccomp.DefaultAction)
	}
}
