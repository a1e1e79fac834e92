package runtime_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestHooks runs one hook of each kind and checks where and when each ran:
// the parent's see the host's view of the rootfs, createContainer sees the
// container's mounts under it, startContainer runs inside the container,
// each gets the state on stdin and none the container's environment.
func TestHooks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "cat", "/tmp/started")
	data, logDir := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "marker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	hostLog := filepath.Join(logDir, "log")
	rootfs := filepath.Join(f.bundle, "rootfs")
	// A host hook: logs its kind, the state's status and pid, whether it
	// sees the bind mount inside the rootfs, and the variable the
	// container's environment sets.
	hook := func(kind string) specs.Hook {
		script := `st=$(cat); s=${st#*\"status\":\"}; p=${st#*\"pid\":}; ` +
			`m=no; [ -e ` + rootfs + `/data/marker ] && m=mount; ` +
			`echo "` + kind + ` ${s%%\"*} ${p%%,*} $m env=$LEAK$HOOKVAR" >> ` + hostLog
		return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Env: []string{"HOOKVAR=own"}}
	}
	f.spec.Process.Env = append(f.spec.Process.Env, "LEAK=container")
	f.spec.Mounts = append(f.spec.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: data, Options: []string{"rbind", "ro"}})
	f.spec.Hooks = &specs.Hooks{
		//lint:ignore SA1019 deprecated, and still run
		Prestart:        []specs.Hook{hook("prestart")},
		CreateRuntime:   []specs.Hook{hook("createRuntime")},
		CreateContainer: []specs.Hook{hook("createContainer")},
		// Resolved in the container: busybox's sh, writing into its /tmp.
		StartContainer: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", `cat > /tmp/state; test -e /data/marker && echo "startContainer $LEAK$HOOKVAR" > /tmp/started`}}},
		Poststart:      []specs.Hook{hook("poststart")},
		Poststop:       []specs.Hook{hook("poststop")},
	}
	if got := f.runOK(t); got != "startContainer" {
		t.Errorf("container printed %q, want the startContainer hook's file, written without the container's env", got)
	}
	c, err := f.rt.Load(f.id)
	if err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(c.Pid())
	if err := c.Delete(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(hostLog)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"prestart creating " + pid + " no env=own",
		"createRuntime creating " + pid + " no env=own",
		"createContainer creating " + pid + " mount env=own",
		"poststart running " + pid + " no env=own",
		"poststop stopped " + pid + " no env=own",
	}, "\n") + "\n"
	if string(b) != want {
		t.Errorf("hook log:\n%s\nwant:\n%s", b, want)
	}
}

// TestFailingHook: a createContainer hook that fails fails Create, with
// its output in the error, and leaves nothing.
func TestFailingHook(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "true")
	f.spec.Hooks = &specs.Hooks{CreateContainer: []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo no ldcache here; exit 3"}}}}
	writeSpec(t, f.bundle, f.spec)
	_, err := f.rt.Create(context.Background(), f.id, f.bundle)
	if err == nil || !strings.Contains(err.Error(), "createContainer hook /bin/sh") || !strings.Contains(err.Error(), "no ldcache here") {
		t.Fatalf("create: %v, want the hook's failure and output", err)
	}
	if ids, _ := f.rt.List(); len(ids) != 0 {
		t.Errorf("left containers %v", ids)
	}
}
