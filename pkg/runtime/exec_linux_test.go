package runtime_test

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-containers/berth/pkg/runtime"
)

// TestExec: a process started in a running container shares its pid,
// mount, uts and cgroup, runs with the credentials asked for and reports
// its exit code; a missing command is an error naming it.
func TestExec(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sleep", "60")
	f.spec.Hostname = "execbox"
	c := f.create(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := *f.spec.Process
	p.Args = []string{"sh", "-c", `echo $$ $(cat /proc/1/comm) $(hostname) $(/probe id); [ "$(cat /proc/self/cgroup)" = "$(cat /proc/1/cgroup)" ] && echo same-cgroup; exit 7`}
	p.User = specs.User{UID: 1000, GID: 1000}
	p.Capabilities = &specs.LinuxCapabilities{}
	proc, err := c.Exec(ctx, &p, runtime.WithStdio(nil, w, w))
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	code, err := proc.Wait(ctx)
	if err != nil || code != 7 {
		t.Errorf("exit %d, %v", code, err)
	}
	fields := strings.Fields(string(out))
	if len(fields) < 6 || fields[0] == "1" || fields[1] != "sleep" || fields[2] != "execbox" || fields[3] != "1000" || fields[len(fields)-1] != "same-cgroup" {
		t.Errorf("exec output: %q", out)
	}
	p.Args = []string{"nosuch-command"}
	if _, err := c.Exec(ctx, &p); err == nil || !strings.Contains(err.Error(), "nosuch-command") {
		t.Errorf("exec of a missing command: %v", err)
	}
}
