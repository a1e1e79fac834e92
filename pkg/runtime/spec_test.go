package runtime

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"strings"
	"testing"

	json "github.com/go-json-experiment/json/v1"
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

// The runtime's JSON package must read a config.json as encoding/json
// does, which runc, crun and the tools that write bundles go by: names in
// any case, the last of duplicate names, nulls, numbers, and the seccomp
// program's cache key (its encoding) byte for byte.
func TestSpecJSONAsEncodingJSON(t *testing.T) {
	s, err := DefaultSpec("rootfs", "sh", "-c", "echo é")
	if err != nil {
		t.Fatal(err)
	}
	adj := -500
	s.Process.OOMScoreAdj = &adj
	s.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
	b, err := stdjson.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	raw := string(b)
	raw = strings.Replace(raw, `"process":`, `"Process":`, 1)
	raw = strings.Replace(raw, `"hostname":`, `"hostname":"first","HOSTNAME":`, 1)
	raw = strings.Replace(raw, `{"ociVersion"`, `{"annotations":null,"ociVersion"`, 1)
	if !strings.Contains(raw, `"HOSTNAME"`) {
		t.Fatalf("no hostname in %s", raw)
	}
	var want, got specs.Spec
	if err := stdjson.Unmarshal([]byte(raw), &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded unlike encoding/json (-want +got):\n%s", diff)
	}
	if got.Process == nil || got.Hostname == "first" {
		t.Errorf("case or duplicate names not read as encoding/json reads them: %+v", got.Process)
	}
	wantKey, err := stdjson.Marshal(want.Linux.Seccomp)
	if err != nil {
		t.Fatal(err)
	}
	gotKey, err := json.Marshal(got.Linux.Seccomp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wantKey, gotKey) {
		t.Error("the seccomp profile encodes unlike encoding/json")
	}
	for _, bad := range []string{`{"process":`, `{"ociVersion": 1}`, `{"process":{"args":["a"]}} x`} {
		if (stdjson.Unmarshal([]byte(bad), &want) == nil) != (json.Unmarshal([]byte(bad), &got) == nil) {
			t.Errorf("%s: accepted by one decoder only", bad)
		}
	}
}
