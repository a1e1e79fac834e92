package server

import (
	"context"
	"net/http"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"

	"github.com/berth-containers/berth/pkg/daemon"
)

// ExecBackend is what the exec routes need; *daemon.Daemon is one.
type ExecBackend interface {
	ExecCreate(ctr *daemon.Container, cfg container.ExecCreateRequest) (*daemon.Exec, error)
	ExecGet(id string) (*daemon.Exec, error)
	ExecState(e *daemon.Exec) daemon.ExecState
	ExecStart(e *daemon.Exec, attach, tty bool, size *[2]uint) (*daemon.Attachment, error)
	ExecResize(e *daemon.Exec, height, width uint16) error
}

func (s *Server) createExec(_ context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctr, err := s.b.Container(vars["id"])
	if err != nil {
		return err
	}
	var req container.ExecCreateRequest
	if err := decodeJSON(r, w, &req); err != nil {
		return err
	}
	if req.DetachKeys != "" {
		if _, err := parseDetachKeys(req.DetachKeys); err != nil {
			return errBadRequestf("%v", err)
		}
	}
	e, err := s.b.ExecCreate(ctr, req)
	if err != nil {
		return err
	}
	s.containerEvent("exec_create", ctr)
	return writeJSON(w, http.StatusCreated, container.ExecCreateResponse{ID: e.ID})
}

// startExec runs the exec's process: detached it answers at once;
// otherwise the connection is taken over for its streams, which were
// claimed before the process started, so no output is missed.
func (s *Server) startExec(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	e, err := s.b.ExecGet(vars["id"])
	if err != nil {
		return err
	}
	var req container.ExecStartRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, w, &req); err != nil {
			return err
		}
	}
	tty := e.Config.Tty || req.Tty
	att, err := s.b.ExecStart(e, !req.Detach, req.Tty, req.ConsoleSize)
	if err != nil && !req.Detach && !errdefs.IsConflict(err) && !errdefs.IsNotFound(err) {
		// As Docker: the client hears the failure in its stream, and the
		// exit code (126, 127 for a missing command) from inspect.
		conn, _, herr := hijack(w, r, tty)
		if herr != nil {
			return err
		}
		defer conn.Close()
		msg := []byte("berth: exec failed: " + message(err) + "\r\n")
		if tty {
			_, _ = conn.Write(msg)
		} else {
			_ = frame(conn, "stderr", msg)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if req.Detach || att == nil {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	sc, _ := att.Conn(ctx)
	conn, buf, err := hijack(w, r, tty)
	if err != nil {
		sc.Close()
		return err
	}
	defer conn.Close()
	keys := defaultDetachKeys
	if e.Config.DetachKeys != "" {
		keys, _ = parseDetachKeys(e.Config.DetachKeys)
	}
	pipeStreams(conn, buf, sc, e.Config.AttachStdin, keys)
	return nil
}

func (s *Server) resizeExec(_ context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	e, err := s.b.ExecGet(vars["id"])
	if err != nil {
		return err
	}
	h, wd, err := terminalSize(r)
	if err != nil {
		return err
	}
	if err := s.b.ExecResize(e, h, wd); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) inspectExec(_ context.Context, w http.ResponseWriter, _ *http.Request, vars map[string]string) error {
	e, err := s.b.ExecGet(vars["id"])
	if err != nil {
		return err
	}
	st := s.b.ExecState(e)
	c := e.Config
	priv := c.Privileged
	return writeJSON(w, http.StatusOK, container.ExecInspectResponse{ID: e.ID, Running: st.Running, ExitCode: st.ExitCode,
		ProcessConfig: &container.ExecProcessConfig{Tty: c.Tty, Entrypoint: c.Cmd[0], Arguments: c.Cmd[1:], Privileged: &priv, User: c.User},
		OpenStdin:     c.AttachStdin, OpenStdout: c.AttachStdout, OpenStderr: c.AttachStderr, ContainerID: e.ContainerID,
		DetachKeys: []byte(c.DetachKeys), Pid: st.Pid})
}
