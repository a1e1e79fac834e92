package daemon

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestIdleTrim: a request marks work; once the API is quiet for the
// period, the trim runs and clears the mark; with no new request it does
// not run again.
func TestIdleTrim(t *testing.T) {
	trim := newIdleTrim(20 * time.Millisecond)
	h := trim.track(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/_ping", nil))
	if !trim.pending.Load() {
		t.Fatal("a request did not mark work")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go trim.run(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for trim.pending.Load() {
		if time.Now().After(deadline) {
			t.Fatal("no trim after the quiet period")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
