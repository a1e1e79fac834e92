package runtime

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	json "github.com/go-json-experiment/json/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// OCI hooks run at these points of a container's life, as runc runs them:
//
//	prestart, createRuntime  the parent, in the runtime's namespaces, once init
//	                         has made its mounts and devices (before pivot_root)
//	createContainer          init, in the container's namespaces, same moment:
//	                         the host's paths still resolve, the container's
//	                         mounts are in place under the bundle's rootfs
//	startContainer           init, after Start, in the container's root, just
//	                         before the process's credentials are set
//	poststart, poststop      the caller of Start and Delete; a failure is
//	                         logged, as the spec asks, and does not fail them
//
// A hook gets the container's state on stdin and only the environment its
// own entry names: never the container's (an image's LD_PRELOAD must not
// reach a host binary: CVE-2025-23266).

// hookOutputMax bounds the output of a failed hook kept in its error.
const hookOutputMax = 4 << 10

// runHooks runs hooks in order and stops at the first failure.
func runHooks(kind string, hooks []specs.Hook, st *specs.State) error {
	if len(hooks) == 0 {
		return nil
	}
	state, err := json.Marshal(st)
	if err != nil {
		return err
	}
	for _, h := range hooks {
		if err := runHook(h, state); err != nil {
			return fmt.Errorf("%s hook %s: %w", kind, h.Path, err)
		}
	}
	return nil
}

// warnHooks runs every hook and logs the failures (poststart, poststop).
func warnHooks(kind string, hooks []specs.Hook, st *specs.State) {
	for _, h := range hooks {
		if err := runHooks(kind, []specs.Hook{h}, st); err != nil {
			slog.Warn("container hook failed", "container", st.ID, "err", err)
		}
	}
}

func runHook(h specs.Hook, state []byte) error {
	ctx := context.Background()
	if h.Timeout != nil {
		if *h.Timeout <= 0 {
			return fmt.Errorf("timeout %d: must be positive", *h.Timeout)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, h.Path)
	if len(h.Args) > 0 {
		cmd.Args = h.Args
	}
	// A nil Env would be this process's environment.
	cmd.Env = append([]string{}, h.Env...)
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(state)
	out := &cappedBuffer{max: hookOutputMax}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %ds", *h.Timeout)
	}
	if err != nil {
		if msg := strings.TrimSpace(out.String()); msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
	}
	return err
}

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// hookState is the OCI state a hook reads on stdin.
func hookState(id, bundle string, pid int, status specs.ContainerState, annotations map[string]string) *specs.State {
	return &specs.State{Version: specs.Version, ID: id, Status: status, Pid: pid, Bundle: bundle, Annotations: annotations}
}

// parentHooks are the hooks the parent runs while init waits.
func parentHooks(h *specs.Hooks) bool {
	//lint:ignore SA1019 deprecated, and still run, as runc does
	return h != nil && (len(h.Prestart) > 0 || len(h.CreateRuntime) > 0)
}
