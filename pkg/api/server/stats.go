package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"

	"github.com/berth-containers/berth/pkg/cgroups"
	"github.com/berth-containers/berth/pkg/daemon"
)

// StatsBackend is what top and stats need; *daemon.Daemon is one.
type StatsBackend interface {
	ContainerTop(ctx context.Context, ctr *daemon.Container, psArgs string) ([]string, [][]string, error)
	ContainerStats(ctr *daemon.Container) (*cgroups.Stats, error)
}

func (s *Server) topContainer(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctr, err := s.b.Container(vars["id"])
	if err != nil {
		return err
	}
	titles, procs, err := s.b.ContainerTop(ctx, ctr, r.URL.Query().Get("ps_args"))
	if err != nil {
		return err
	}
	if procs == nil {
		procs = [][]string{}
	}
	return writeJSON(w, http.StatusOK, container.TopResponse{Titles: titles, Processes: procs})
}

// statsContainer answers one sample (stream=false) or one a second until
// the client leaves or the container stops. Each carries the previous
// sample's CPU figures, from which clients compute a percentage.
func (s *Server) statsContainer(ctx context.Context, w http.ResponseWriter, r *http.Request, vars map[string]string) error {
	ctr, err := s.b.Container(vars["id"])
	if err != nil {
		return err
	}
	q := r.URL.Query()
	stream := q.Get("stream") == "" || boolParam(q.Get("stream"))
	if boolParam(q.Get("one-shot")) {
		stream = false
	}
	sample := func(prev *container.StatsResponse) (*container.StatsResponse, error) {
		st, err := s.b.ContainerStats(ctr)
		if err != nil {
			return nil, err
		}
		resp := &container.StatsResponse{ID: ctr.ID, Name: "/" + ctr.Name, OSType: "linux", Read: time.Now().UTC(),
			CPUStats: container.CPUStats{CPUUsage: container.CPUUsage{TotalUsage: st.CPUUsage},
				SystemUsage: systemCPUUsage(), OnlineCPUs: uint32(goruntime.NumCPU())},
			MemoryStats: container.MemoryStats{Usage: st.MemoryUsage, Limit: st.MemoryLimit},
			PidsStats:   container.PidsStats{Current: st.Pids}}
		if resp.MemoryStats.Limit == 0 || resp.MemoryStats.Limit >= 1<<62 { // unlimited (v1 reports a huge number)
			resp.MemoryStats.Limit = hostMemory()
		}
		if prev != nil {
			resp.PreRead, resp.PreCPUStats = prev.Read, prev.CPUStats
		}
		return resp, nil
	}
	cur, err := sample(nil)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	if !stream {
		// One sample with a previous one a moment before, so that a
		// percentage can be computed from it.
		time.Sleep(100 * time.Millisecond)
		if next, err := sample(cur); err == nil {
			cur = next
		}
		return enc.Encode(cur)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := enc.Encode(cur); err != nil {
			return nil
		}
		w.(http.Flusher).Flush()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if s.b.ContainerState(ctr).Status != container.StateRunning {
			return nil
		}
		next, err := sample(cur)
		if err != nil {
			return nil
		}
		cur = next
	}
}

// systemCPUUsage is the host's CPU time in nanoseconds, from /proc/stat,
// as Docker reports it.
func systemCPUUsage() uint64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[0] != "cpu" {
			continue
		}
		var ticks uint64
		for _, v := range fields[1:8] {
			n, _ := strconv.ParseUint(v, 10, 64)
			ticks += n
		}
		return ticks * (1e9 / 100) // USER_HZ is 100 on Linux
	}
	return 0
}

// hostMemory is the machine's memory: the limit of an unlimited container.
func hostMemory() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			return n << 10
		}
	}
	return 0
}
