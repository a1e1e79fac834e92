package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-containers/berth/internal/testutil"
)

// A GPU container's view, printed by one shell: its nvidia device nodes,
// what nvidia-smi lists, its NVIDIA variables.
const gpuView = `ls /dev | grep nvidia | tr '\n' ' '; echo; ` +
	`nvidia-smi 2>&1 | tr '\n' ';'; echo; echo "visible=$NVIDIA_VISIBLE_DEVICES caps=$NVIDIA_DRIVER_CAPABILITIES"`

// TestGPUs runs containers on a fake NVIDIA driver with two GPUs (see
// testutil.FakeNvidia): --gpus all, device=, a count on the least used
// GPU, none; device nodes with their numbers, the device cgroup, the
// libraries read-only and in the container's ld cache, /dev/shm, and
// the holders in ps, inspect and info.
func TestGPUs(t *testing.T) {
	t.Parallel()
	root := testutil.FakeNvidia(t, 2)
	d := startDaemonWith(t, "--nvidia-driver-root", root)
	d.dockerOK(t, "import", busyboxTar(t), "busybox")
	uuid0, uuid1 := testutil.FakeGPUUUID(0), testutil.FakeGPUUUID(1)

	out := d.berthOK(t, "run", "--rm", "--gpus", "all", "busybox", "sh", "-c", gpuView)
	want := "nvidia-uvm nvidia-uvm-tools nvidia0 nvidia1 nvidiactl \nGPU 0: NVIDIA Fake H100;GPU 1: NVIDIA Fake H100;\n" +
		"visible=" + uuid0 + "," + uuid1 + " caps=compute,utility\n"
	if out != want {
		t.Errorf("--gpus all:\n%s\nwant:\n%s", out, want)
	}

	// One GPU by index; the image's (here -e) NVIDIA_VISIBLE_DEVICES
	// cannot widen it. The node is c 195:1 and opens as far as the
	// driver (ENXIO: none backs it); the other GPU's node, bind-mounted
	// in, is refused by the device cgroup (EPERM), and so is making one.
	lib := testutil.FakeLibDir + "/libcuda.so." + testutil.FakeDriverVersion
	script := gpuView + `; stat -c '%F %t:%T' /dev/nvidia1; /probe open /dev/nvidia1; ` +
		`/probe open /tmp/gpu0; mknod /tmp/n c 195 0 2>/dev/null || echo mknod refused; /probe write ` + lib + `; ` +
		`readlink ` + testutil.FakeLibDir + `/libcuda.so.1; grep -q libcuda.so.1 /etc/ld.so.cache && echo in-ld-cache; ` +
		`ls ` + testutil.FakeLibDir + ` | grep -c glcore; echo $(( $(stat -f -c '%b*%S' /dev/shm) / 1024 ))`
	out = d.berthOK(t, "run", "--rm", "--gpus", "device=1", "-e", "NVIDIA_VISIBLE_DEVICES=all",
		"-v", root+"/dev/nvidia0:/tmp/gpu0", "busybox", "sh", "-c", script)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want = strings.Join([]string{"nvidia-uvm nvidia-uvm-tools nvidia1 nvidiactl ", "GPU 1: NVIDIA Fake H100;",
		"visible=" + uuid1 + " caps=compute,utility", "character special file c3:1", "ENXIO", "EPERM", "mknod refused", "EROFS",
		"libcuda.so." + testutil.FakeDriverVersion, "in-ld-cache", "0"}, "\n")
	if len(lines) != 12 || strings.Join(lines[:11], "\n") != want {
		t.Fatalf("--gpus device=1:\n%s\nwant:\n%s\nsize=...", out, want)
	}
	if kb, _ := strconv.Atoi(lines[11]); kb <= 64<<10 {
		t.Errorf("/dev/shm of a GPU container: %s KiB, want more than Docker's 64 MiB", lines[11])
	}
	// --shm-size wins.
	if out := d.berthOK(t, "run", "--rm", "--gpus", "1", "--shm-size", "32m", "busybox", "stat", "-f", "-c", "%b*%S", "/dev/shm"); out != "8192*4096\n" {
		t.Errorf("--shm-size 32m: %s", out)
	}

	// Without --gpus: nothing, whatever the environment says.
	out = d.berthOK(t, "run", "--rm", "-e", "NVIDIA_VISIBLE_DEVICES=all", "busybox", "sh", "-c", "ls /dev | grep -c nvidia; ls /usr/bin/nvidia-smi 2>&1; true")
	if !strings.HasPrefix(out, "0\n") || !strings.Contains(out, "No such file") {
		t.Errorf("no --gpus:\n%s", out)
	}

	// Counts take the least used GPU: a holds GPU 0, b then GPU 1.
	d.berthOK(t, "run", "-d", "--name", "a", "--gpus", "1", "busybox", "sleep", "100")
	d.berthOK(t, "run", "-d", "--name", "b", "--gpus", "1", "busybox", "sleep", "100")
	if got := strings.TrimSpace(d.berthOK(t, "inspect", "-f", `{{index .Config.Labels "berth.gpus"}}`, "a", "b")); got != uuid0+"\n"+uuid1 {
		t.Errorf("inspect a, b: GPUs %q, want %s then %s", got, uuid0, uuid1)
	}
	ps := d.berthOK(t, "ps")
	if !strings.Contains(ps, "GPUS") || !strings.Contains(grepLines(ps, " b"), uuid1) {
		t.Errorf("ps shows no GPUs:\n%s", ps)
	}
	info := d.berthOK(t, "info")
	for _, want := range []string{uuid0 + " (nvidia): held by a", uuid1 + " (nvidia): held by b"} {
		if !strings.Contains(info, want) {
			t.Errorf("info: no %q in\n%s", want, info)
		}
	}
	// A third one shares; which GPU it takes, both being held once,
	// is the lower index. Once a stops, GPU 0 is the free one.
	d.berthOK(t, "rm", "-f", "a")
	out = d.berthOK(t, "run", "--rm", "--gpus", "1", "busybox", "sh", "-c", "echo $NVIDIA_VISIBLE_DEVICES")
	if strings.TrimSpace(out) != uuid0 {
		t.Errorf("--gpus 1 with GPU 1 held: got %s, want the free GPU %s", out, uuid0)
	}
	// The docker CLI sends the same request.
	if out := d.dockerOK(t, "run", "--rm", "--gpus", `"device=0"`, "busybox", "sh", "-c", "ls /dev | grep nvidia[0-9]"); out != "nvidia0\n" {
		t.Errorf("docker run --gpus device=0: %q", out)
	}

	// Bad requests name what was wrong and leave nothing (checked at cleanup).
	for _, tc := range []struct{ args, want string }{
		{"--gpus device=5", `no GPU "5": this machine has 0 (` + uuid0 + `), 1 (` + uuid1 + `)`},
		{"--gpus 3", "3 GPUs asked for: this machine has 2"},
		{"--gpus all,capabilities=tpu", "could not select device driver"},
		{"--device vendor.com/fpga=a", "unresolvable CDI devices vendor.com/fpga=a"},
	} {
		args := append(append([]string{"run", "--rm"}, strings.Fields(tc.args)...), "busybox", "true")
		out, err := d.berth(t, "", args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("run %s: %v %s, want an error with %q", tc.args, err, out, tc.want)
		}
	}
	if out := d.berthOK(t, "ps", "-aq"); strings.Count(out, "\n") != 1 {
		t.Errorf("containers left after failed runs:\n%s", out)
	}
}

// TestCDIDevices: a CDI spec's devices, by --device name and as the GPUs
// of --gpus, with their nodes, mounts, environment and hooks.
func TestCDIDevices(t *testing.T) {
	t.Parallel()
	root := testutil.FakeNvidia(t, 2)
	dir, data := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "bitstream"), []byte("fpga image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hookLog := filepath.Join(t.TempDir(), "hook.log")
	spec := fmt.Sprintf(`cdiVersion: "0.6.0"
kind: nvidia.com/gpu
devices:
  - name: "0"
    containerEdits:
      deviceNodes: [{path: /dev/nvidia0, hostPath: %[1]s/dev/nvidia0}]
  - name: "1"
    containerEdits:
      deviceNodes: [{path: /dev/nvidia1, hostPath: %[1]s/dev/nvidia1}]
containerEdits:
  env: [NVIDIA_VISIBLE_DEVICES=void]
  deviceNodes: [{path: /dev/nvidiactl, hostPath: %[1]s/dev/nvidiactl}]
  mounts: [{hostPath: %[1]s/usr/bin/nvidia-smi, containerPath: /usr/bin/nvidia-smi, options: [ro, nosuid, nodev, bind]}]
  hooks:
    - hookName: createContainer
      path: /bin/sh
      args: [sh, -c, 'grep -q "\"status\":\"creating\"" && echo "$HOOK" >> %[2]s']
      env: [HOOK=cdi-hook-ran]
---
`, root, hookLog)
	fpga := fmt.Sprintf(`{"cdiVersion": "0.6.0", "kind": "example.com/fpga", "devices": [{"name": "a", "containerEdits": {
  "deviceNodes": [{"path": "/dev/fpga-a", "hostPath": "%s/dev/nvidia-uvm"}],
  "mounts": [{"hostPath": "%s", "containerPath": "/opt/fpga", "options": ["ro", "bind"]}],
  "env": ["FPGA=a"]}}, {"name": "b", "containerEdits": {
  "hooks": [{"hookName": "startContainer", "path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]}}]}`, root, data)
	for name, content := range map[string]string{"nvidia.yaml": strings.TrimSuffix(spec, "---\n"), "fpga.json": fpga} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := startDaemonWith(t, "--cdi-spec-dir", dir, "--nvidia-driver-root", root)
	d.dockerOK(t, "import", busyboxTar(t), "busybox")

	out := d.berthOK(t, "run", "--rm", "--device", "example.com/fpga=a", "busybox", "sh", "-c",
		"ls /dev | grep -E 'fpga|nvidia' | tr '\\n' ' '; echo $FPGA; cat /opt/fpga/bitstream; stat -c %t:%T /dev/fpga-a; stat -f -c '%b*%S' /dev/shm")
	// No GPU: Docker's /dev/shm.
	if want := "fpga-a a\nfpga image\n1ff:0\n16384*4096\n"; out != want {
		t.Errorf("--device example.com/fpga=a:\n%s\nwant:\n%s", out, want)
	}
	// The docker CLI sends a CDI name as it will (a device request on
	// newer API versions, a device mapping on older ones): both work.
	if out := d.dockerOK(t, "run", "--rm", "--device", "example.com/fpga=a", "busybox", "sh", "-c", "echo $FPGA; ls /dev/fpga-a"); out != "a\n/dev/fpga-a\n" {
		t.Errorf("docker run --device example.com/fpga=a: %q", out)
	}
	// --gpus takes the CDI spec's GPUs, not the driver's: its nodes, its
	// environment, its hook.
	out = d.berthOK(t, "run", "--rm", "--gpus", "device=1", "busybox", "sh", "-c", gpuView)
	if want := "nvidia1 nvidiactl \nGPU 1: NVIDIA Fake H100;\nvisible=void caps=\n"; out != want {
		t.Errorf("--gpus device=1 from CDI:\n%s\nwant:\n%s", out, want)
	}
	if b, _ := os.ReadFile(hookLog); string(b) != "cdi-hook-ran\n" {
		t.Errorf("the CDI spec's createContainer hook wrote %q", b)
	}
	// A start that fails after init was released (a startContainer hook
	// here; berth-monitor reads it): the error reaches start, the end is
	// recorded with it, and --rm removes the container.
	d.berthOK(t, "create", "--name", "hookfails", "--device", "example.com/fpga=b", "busybox", "true")
	if out, err := d.berth(t, "", "start", "hookfails"); err == nil || !strings.Contains(out, "startContainer hook /bin/sh: exit status 3") {
		t.Errorf("start with a failing startContainer hook: %v %s", err, out)
	}
	if out := d.berthOK(t, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.State.Error}}", "hookfails"); !strings.HasPrefix(out, "exited 255 ") || !strings.Contains(out, "exit status 3") {
		t.Errorf("after a failed start: %q", out)
	}
	d.berthOK(t, "rm", "hookfails")
	if out, err := d.berth(t, "", "run", "--rm", "--device", "example.com/fpga=b", "busybox", "true"); err == nil || !strings.Contains(out, "exit status 3") {
		t.Errorf("run --rm with a failing startContainer hook: %v %s", err, out)
	}
	if out := d.berthOK(t, "ps", "-aq"); out != "" {
		t.Errorf("containers left after a failed start:\n%s", out)
	}
	info := d.berthOK(t, "info")
	for _, want := range []string{"nvidia.com/gpu=0 (cdi): free", "nvidia.com/gpu=1 (cdi): free", "example.com/fpga=a (cdi): free", "CDI Spec Directories: "} {
		if !strings.Contains(info, want) {
			t.Errorf("info: no %q in\n%s", want, info)
		}
	}
}

// TestGPUCheckScript runs integration/gpu/check.sh, the check for a
// machine with a real GPU, on a fake driver, so that it does not rot
// between the runs on such machines.
func TestGPUCheckScript(t *testing.T) {
	t.Parallel()
	root := testutil.FakeNvidia(t, 2)
	testutil.Require(t, testutil.BusyboxPath)
	cmd := exec.Command("integration/gpu/check.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "GPU_CHECK_DRIVER_ROOT="+root)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "GPU CHECK PASSED") {
		t.Fatalf("check.sh: %v\n%s", err, out)
	}
	for _, want := range []string{"== berth run --gpus device=0 berth/gpu-check nvidia-smi -L\nGPU 0: NVIDIA Fake H100\n",
		"GPU 1: NVIDIA Fake H100\n== berth run --gpus device=0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check.sh output has no %q:\n%s", want, out)
		}
	}
}

// TestGPUsShareOutInParallel: four `run -d --gpus 1` at once on four GPUs
// get one GPU each (the choice and its record are one step).
func TestGPUsShareOutInParallel(t *testing.T) {
	t.Parallel()
	root := testutil.FakeNvidia(t, 4)
	d := startDaemonWith(t, "--nvidia-driver-root", root)
	d.dockerOK(t, "import", busyboxTar(t), "busybox")
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			out, err := d.berth(t, "", "run", "-d", "--name", fmt.Sprint("job", i), "--gpus", "1", "busybox", "sleep", "60")
			if err != nil {
				err = fmt.Errorf("%v: %s", err, out)
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	held := d.berthOK(t, "ps", "--format", `{{.GPUs}}`)
	seen := map[string]bool{}
	for _, id := range strings.Fields(held) {
		seen[id] = true
	}
	if len(seen) != 4 {
		t.Errorf("four containers hold %d distinct GPUs:\n%s", len(seen), held)
	}
}
