package logs_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-containers/berth/pkg/logs"
)

func readAll(t *testing.T, path string, opts logs.ReadOptions) []string {
	t.Helper()
	var out []string
	err := logs.Read(context.Background(), path, opts, func(e logs.Entry) error {
		out = append(out, e.Stream+":"+strings.TrimSuffix(e.Log, "\n"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteRotateRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c-json.log")
	w, err := logs.Open(path, 400, 3)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 20 {
		stream := "stdout"
		if i%2 == 1 {
			stream = "stderr"
		}
		if err := w.Write(logs.Entry{Log: fmt.Sprintf("line %d\n", i), Stream: stream, Time: t0.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	for _, p := range []string{path, path + ".1", path + ".2"} {
		if fi, err := os.Stat(p); err != nil || fi.Size() > 400 {
			t.Errorf("%s: %v, size over the limit", p, err)
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("more files kept than maxFiles: %v", err)
	}
	all := readAll(t, path, logs.ReadOptions{Tail: -1})
	if len(all) == 0 || all[len(all)-1] != "stderr:line 19" {
		t.Fatalf("all entries: %v", all)
	}
	for i := 1; i < len(all); i++ {
		var a, b int
		fmt.Sscanf(all[i-1][strings.Index(all[i-1], " ")+1:], "%d", &a)
		fmt.Sscanf(all[i][strings.Index(all[i], " ")+1:], "%d", &b)
		if b != a+1 {
			t.Fatalf("entries out of order or missing: %v", all)
		}
	}
	if got := readAll(t, path, logs.ReadOptions{Tail: 2}); strings.Join(got, ",") != "stdout:line 18,stderr:line 19" {
		t.Errorf("tail 2: %v", got)
	}
	if got := readAll(t, path, logs.ReadOptions{Tail: -1, Since: t0.Add(17 * time.Second), Until: t0.Add(18 * time.Second)}); strings.Join(got, ",") != "stderr:line 17,stdout:line 18" {
		t.Errorf("since/until: %v", got)
	}
	if got := readAll(t, path, logs.ReadOptions{Tail: 0}); len(got) != 0 {
		t.Errorf("tail 0: %v", got)
	}
}

func TestCopySplitsLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c-json.log")
	w, _ := logs.Open(path, 0, 1)
	long := strings.Repeat("x", 40<<10)
	if err := w.Copy("stdout", strings.NewReader("a\nb\n"+long+"\nno newline")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var got []logs.Entry
	logs.Read(context.Background(), path, logs.ReadOptions{Tail: -1}, func(e logs.Entry) error { got = append(got, e); return nil })
	joined := ""
	for _, e := range got[2:] {
		joined += e.Log
	}
	if got[0].Log != "a\n" || got[1].Log != "b\n" || joined != long+"\nno newline" || len(got) < 5 {
		t.Errorf("%d entries; a long line must be split at 16 KiB and rejoin to the original", len(got))
	}
}

// TestFollow: a reader following the log sees entries written after it
// started, across a rotation, and returns once Done is closed.
func TestFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c-json.log")
	w, _ := logs.Open(path, 300, 2)
	w.Write(logs.Entry{Log: "before\n", Stream: "stdout", Time: time.Now()})
	done := make(chan struct{})
	var mu sync.Mutex
	var got []string
	finished := make(chan error)
	go func() {
		finished <- logs.Read(context.Background(), path, logs.ReadOptions{Tail: -1, Follow: true, Done: done}, func(e logs.Entry) error {
			mu.Lock()
			got = append(got, strings.TrimSpace(e.Log))
			mu.Unlock()
			return nil
		})
	}()
	time.Sleep(150 * time.Millisecond)
	for i := range 6 { // enough to rotate at 300 bytes
		w.Write(logs.Entry{Log: fmt.Sprintf("after %d\n", i), Stream: "stdout", Time: time.Now()})
		time.Sleep(120 * time.Millisecond)
	}
	close(done)
	select {
	case err := <-finished:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read with Follow did not return after Done")
	}
	mu.Lock()
	defer mu.Unlock()
	want := "before,after 0,after 1,after 2,after 3,after 4,after 5"
	if strings.Join(got, ",") != want {
		t.Errorf("followed %q, want %q", strings.Join(got, ","), want)
	}
}
