package runtime_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-containers/berth/pkg/runtime"
)

// TestSpareInit: a container whose namespaces fit runs in the spare init
// (same pid), with the stdio handed to it, and sees the mounts made after
// the spare started (a private one here, which no propagation carries);
// one that does not fit (the host's network) ends the spare and runs in
// an init of its own.
func TestSpareInit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		hostNet bool
	}{{"fits", false}, {"host network", true}} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t)
			f := newFixture(t, "sh", "-c", "echo out; echo err >&2; hostname; cat /mnt/late/marker; exit 3")
			f.spec.Hostname = "spare"
			if tc.hostNet {
				var keep []specs.LinuxNamespace
				for _, ns := range f.spec.Linux.Namespaces {
					if ns.Type != specs.NetworkNamespace {
						keep = append(keep, ns)
					}
				}
				f.spec.Linux.Namespaces = keep
			}
			sp, err := runtime.StartSpareInit()
			if err != nil {
				t.Fatal(err)
			}
			sparePid := sp.Pid()
			// A mount made now, on a private mount point.
			mnt := filepath.Join(f.bundle, "rootfs", "mnt")
			late := filepath.Join(mnt, "late")
			if err := os.MkdirAll(late, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, m := range []struct {
				src, dst, fstype string
				flags            uintptr
			}{{mnt, mnt, "", unix.MS_BIND}, {"", mnt, "", unix.MS_PRIVATE}, {"tmpfs", late, "tmpfs", 0}} {
				if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, ""); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
			if err := os.WriteFile(filepath.Join(late, "marker"), []byte("late mount\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			c := f.create(t, runtime.WithStdio(nil, w, w), runtime.WithSpareInit(sp))
			w.Close()
			if got := c.Pid() == sparePid; got == tc.hostNet {
				t.Errorf("container init is the spare: %v, want %v", got, !tc.hostNet)
			}
			out := make(chan string)
			go func() { b, _ := io.ReadAll(r); out <- string(b) }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.Start(ctx); err != nil {
				t.Fatal(err)
			}
			code, err := c.Wait(ctx)
			if err != nil || code != 3 {
				t.Errorf("exit %d %v, want 3", code, err)
			}
			got := <-out
			for _, want := range []string{"out\n", "err\n", "spare\n", "late mount\n"} {
				if !strings.Contains(got, want) {
					t.Errorf("output %q lacks %q", got, want)
				}
			}
			if err := c.Delete(ctx, true); err != nil {
				t.Fatal(err)
			}
			if after := snapshot(t); after.zombies != before.zombies {
				t.Errorf("zombies: %d before, %d after", before.zombies, after.zombies)
			}
		})
	}
}
