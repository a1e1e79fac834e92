package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/events"
)

// Events is the daemon's event bus: the last events for `since`, and
// subscribers for `docker events` streams.
type Events struct {
	mu      sync.Mutex
	history []events.Message
	subs    map[chan events.Message]struct{}
}

// historySize is how many past events `since` can reach.
const historySize = 1024

// NewEvents returns an empty bus.
func NewEvents() *Events { return &Events{subs: map[chan events.Message]struct{}{}} }

// Publish records an event and sends it to every subscriber; a subscriber
// too slow to take it misses it rather than stalling the daemon.
func (e *Events) Publish(typ events.Type, action events.Action, id string, attrs map[string]string) {
	now := time.Now()
	m := events.Message{Type: typ, Action: action, Actor: events.Actor{ID: id, Attributes: attrs},
		Scope: "local", Time: now.Unix(), TimeNano: now.UnixNano()}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.history = append(e.history, m)
	if len(e.history) > historySize {
		e.history = e.history[len(e.history)-historySize:]
	}
	for ch := range e.subs {
		select {
		case ch <- m:
		default:
		}
	}
}

// subscribe returns the past events and a channel of the next ones.
func (e *Events) subscribe() ([]events.Message, chan events.Message, func()) {
	ch := make(chan events.Message, 256)
	e.mu.Lock()
	past := append([]events.Message(nil), e.history...)
	e.subs[ch] = struct{}{}
	e.mu.Unlock()
	return past, ch, func() {
		e.mu.Lock()
		delete(e.subs, ch)
		e.mu.Unlock()
	}
}

// parseTime reads since/until: unix seconds, with an optional fraction.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	sec, frac, _ := strings.Cut(s, ".")
	secs, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}, errBadRequestf("time %q: want unix seconds", s)
	}
	var nanos int64
	if frac != "" {
		frac = (frac + "000000000")[:9]
		if nanos, err = strconv.ParseInt(frac, 10, 64); err != nil {
			return time.Time{}, errBadRequestf("time %q: want unix seconds", s)
		}
	}
	return time.Unix(secs, nanos), nil
}

func (s *Server) events(ctx context.Context, w http.ResponseWriter, r *http.Request, _ map[string]string) error {
	q := r.URL.Query()
	since, err := parseTime(q.Get("since"))
	if err != nil {
		return err
	}
	until, err := parseTime(q.Get("until"))
	if err != nil {
		return err
	}
	filters, err := parseFilters(q.Get("filters"))
	if err != nil {
		return err
	}
	match := func(m events.Message) bool {
		if t, ok := filters["type"]; ok && !t[string(m.Type)] {
			return false
		}
		if a, ok := filters["event"]; ok && !a[string(m.Action)] {
			return false
		}
		if i, ok := filters["image"]; ok && !i[m.Actor.ID] && !i[m.Actor.Attributes["name"]] {
			return false
		}
		return true
	}
	past, ch, cancel := s.eventBus.subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(m events.Message) error {
		if err := enc.Encode(m); err != nil {
			return err
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		return nil
	}
	in := func(m events.Message) bool {
		t := time.Unix(0, m.TimeNano)
		return (since.IsZero() || !t.Before(since)) && (until.IsZero() || !t.After(until))
	}
	if !since.IsZero() {
		for _, m := range past {
			if in(m) && match(m) {
				if err := send(m); err != nil {
					return nil
				}
			}
		}
	}
	var deadline <-chan time.Time
	if !until.IsZero() {
		timer := time.NewTimer(time.Until(until))
		defer timer.Stop()
		deadline = timer.C
	}
	for {
		select {
		case m := <-ch:
			if in(m) && match(m) {
				if err := send(m); err != nil {
					return nil
				}
			}
		case <-deadline:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
