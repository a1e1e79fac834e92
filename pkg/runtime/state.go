package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// State is what State reports: the OCI state plus what berth knows on top.
type State struct {
	specs.State
	Created    time.Time `json:"created"`
	Rootfs     string    `json:"rootfs"`
	CgroupPath string    `json:"cgroupPath"`
	// OOMKilled is true once the kernel's OOM killer ended a process of the container.
	OOMKilled bool `json:"oomKilled"`
	// ExitCode is set once the container stopped, when the caller is the
	// process that created it (only a parent learns its child's status).
	ExitCode *int `json:"exitCode,omitempty"`
}

// record is the persisted part of a container's state, in <root>/<id>/state.json.
type record struct {
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	PidStart    uint64            `json:"pidStart"` // /proc/<pid>/stat starttime: guards against pid reuse
	Bundle      string            `json:"bundle"`
	Rootfs      string            `json:"rootfs"`
	CgroupPath  string            `json:"cgroupPath"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Hooks run by Start (poststart) and Delete (poststop).
	Poststart []specs.Hook `json:"poststart,omitempty"`
	Poststop  []specs.Hook `json:"poststop,omitempty"`
}

const (
	stateFile = "state.json"
	execFifo  = "exec.fifo"
)

func (r *record) save(dir string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, stateFile))
}

func loadRecord(dir string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &r, nil
}

// procStart returns the start time of pid (field 22 of /proc/pid/stat) and
// whether the process is still running (not a zombie).
func procStart(pid int) (start uint64, alive bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name may hold spaces and parentheses: split after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, false
	}
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return start, f[0] != "Z" && f[0] != "X"
}

// running reports whether the record's process is alive and still the same one.
func (r *record) running() bool {
	start, alive := procStart(r.Pid)
	return alive && start == r.PidStart
}
