package server

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
)

// APIVersion is the newest API version served; MinAPIVersion the oldest.
const (
	APIVersion    = "1.47"
	MinAPIVersion = "1.24"
)

// handler serves one route; it returns an error instead of writing one.
type handler func(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error

type route struct {
	method, path string
	h            handler
}

func (s *Server) routes() []route {
	return []route{
		{"GET", "/_ping", s.ping},
		{"HEAD", "/_ping", s.ping},
		{"GET", "/version", s.version},
		{"GET", "/info", s.info},
		{"GET", "/system/df", s.diskUsage},
		{"GET", "/events", s.events},
		{"POST", "/auth", s.auth},
		{"POST", "/build", s.build},
		{"POST", "/build/prune", s.pruneBuildCache},
		{"GET", "/networks", s.listNetworks},
		{"POST", "/networks/create", s.createNetwork},
		{"POST", "/networks/prune", s.pruneNetworks},
		{"GET", "/networks/{id}", s.inspectNetwork},
		{"DELETE", "/networks/{id}", s.removeNetwork},
		{"POST", "/networks/{id}/connect", s.connectNetwork},
		{"POST", "/networks/{id}/disconnect", s.disconnectNetwork},
		{"GET", "/images/json", s.listImages},
		{"POST", "/images/create", s.createImage},
		{"POST", "/images/load", s.loadImages},
		{"GET", "/images/get", s.saveImages},
		{"POST", "/images/prune", s.pruneImages},
		{"GET", "/images/{name:.*}/json", s.inspectImage},
		{"GET", "/images/{name:.*}/history", s.imageHistory},
		{"GET", "/images/{name:.*}/get", s.saveImages},
		{"POST", "/images/{name:.*}/push", s.pushImage},
		{"POST", "/images/{name:.*}/tag", s.tagImage},
		{"DELETE", "/images/{name:.*}", s.removeImage},
		{"POST", "/containers/create", s.createContainer},
		{"GET", "/containers/json", s.listContainers},
		{"POST", "/containers/prune", s.pruneContainers},
		{"GET", "/containers/{id}/json", s.inspectContainer},
		{"GET", "/containers/{id}/logs", s.containerLogs},
		{"POST", "/containers/{id}/start", s.startContainer},
		{"POST", "/containers/{id}/wait", s.waitContainer},
		{"POST", "/containers/{id}/attach", s.attachContainer},
		{"POST", "/containers/{id}/stop", s.stopContainer},
		{"POST", "/containers/{id}/kill", s.killContainer},
		{"POST", "/containers/{id}/restart", s.restartContainer},
		{"POST", "/containers/{id}/exec", s.createExec},
		{"GET", "/containers/{id}/top", s.topContainer},
		{"GET", "/containers/{id}/stats", s.statsContainer},
		{"POST", "/exec/{id}/start", s.startExec},
		{"POST", "/exec/{id}/resize", s.resizeExec},
		{"GET", "/exec/{id}/json", s.inspectExec},
		{"POST", "/containers/{id}/resize", s.resizeContainer},
		{"POST", "/containers/{id}/rename", s.renameContainer},
		{"DELETE", "/containers/{id}", s.removeContainer},
	}
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	m := mux.NewRouter()
	for _, rt := range s.routes() {
		f := s.wrap(rt.h)
		m.Path("/v{version:[0-9.]+}" + rt.path).Methods(rt.method).Handler(f)
		m.Path(rt.path).Methods(rt.method).Handler(f)
	}
	m.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errNotFound("page not found: "+r.Method+" "+r.URL.Path))
	})
	m.MethodNotAllowedHandler = m.NotFoundHandler
	return m
}

// wrap adds the version check, the Api-Version header and error writing.
func (s *Server) wrap(h handler) http.Handler {
	return http.HandlerFunc(func(hw http.ResponseWriter, r *http.Request) {
		w := &recorder{ResponseWriter: hw}
		vars := mux.Vars(r)
		w.Header().Set("Api-Version", APIVersion)
		w.Header().Set("Server", "berth/"+s.daemonVersion+" (linux)")
		if v := vars["version"]; v != "" && (versionLess(v, MinAPIVersion) || versionLess(APIVersion, v)) {
			writeError(w, errBadRequestf("client version %s is not supported: this daemon serves API %s to %s", v, MinAPIVersion, APIVersion))
			return
		}
		start := time.Now()
		err := h(r.Context(), w, r, vars)
		if err != nil {
			slog.Debug("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			if !w.wrote {
				writeError(w, err)
			}
		}
		slog.Debug("request", "method", r.Method, "path", r.URL.Path, "took", time.Since(start))
	})
}

// versionLess compares API versions such as 1.9 and 1.47.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x = atoi(as[i])
		}
		if i < len(bs) {
			y = atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// recorder remembers whether a handler began its response, after which an
// error can no longer be sent as a status.
type recorder struct {
	http.ResponseWriter
	wrote bool
}

func (r *recorder) WriteHeader(code int) {
	r.wrote = true
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// Hijack hands the connection over (attach).
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, fmt.Errorf("connection cannot be taken over")
	}
	r.wrote = true
	return hj.Hijack()
}

// Flush sends what was written so far (streamed progress, archives).
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
