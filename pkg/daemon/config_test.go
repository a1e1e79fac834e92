package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLogRotation(t *testing.T) {
	for _, tc := range []struct {
		opts        map[string]string
		size, files int64
		bad         bool
	}{
		{nil, 10 << 20, 3, false},
		{map[string]string{"max-size": "1k", "max-file": "5"}, 1 << 10, 5, false},
		{map[string]string{"max-size": "lots"}, 0, 0, true},
		{map[string]string{"max-file": "0"}, 0, 0, true},
		{map[string]string{"compress": "true"}, 0, 0, true},
	} {
		size, files, err := Config{LogOpts: tc.opts}.logRotation()
		if (err != nil) != tc.bad || (!tc.bad && (size != tc.size || int64(files) != tc.files)) {
			t.Errorf("%v: %d %d %v", tc.opts, size, files, err)
		}
	}
}

// TestConfigFileAndFlags: daemon.json's keys, flags over the file, defaults
// under both.
func TestConfigFileAndFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.json")
	os.WriteFile(path, []byte(`{"data-root": "/file", "log-opts": {"max-size": "1m", "max-file": "2"},
		"default-ulimits": {"nofile": {"Name": "nofile", "Soft": 100, "Hard": 200}}, "cgroup-parent": "/fromfile"}`), 0o644)
	file, err := LoadConfigFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	flags := Config{Root: "/flag", LogOpts: map[string]string{"max-size": "5m"}}
	c := flags.Merge(file)
	if c.Root != "/flag" || c.LogOpts["max-size"] != "5m" || c.LogOpts["max-file"] != "2" || c.CgroupParent != "/fromfile" ||
		c.DefaultUlimits["nofile"].Hard != 200 || c.Hosts[0] != DefaultHost {
		t.Errorf("merged: %+v", c)
	}
	if _, err := LoadConfigFile(filepath.Join(t.TempDir(), "nope.json"), true); err == nil {
		t.Error("a missing file given explicitly is no error")
	}
	os.WriteFile(path, []byte(`{"unknown-key": 1}`), 0o644)
	if _, err := LoadConfigFile(path, true); err == nil {
		t.Error("an unknown key is no error")
	}
}
