package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// FakeDriverVersion is the version of FakeNvidia's libraries.
const FakeDriverVersion = "550.54.15"

// FakeLibDir is where FakeNvidia puts the driver's libraries, as Debian does.
const FakeLibDir = "/usr/lib/x86_64-linux-gnu"

// FakeNvidia makes a fake NVIDIA driver root with n GPUs, as the driver
// lays it out on a host:
//
//   - /dev/nvidia0..n-1 (character devices, major 195, minor = index),
//     /dev/nvidiactl (195:255), /dev/nvidia-uvm and nvidia-uvm-tools (a
//     major of their own), made with mknod; no driver backs them, so an
//     open that the device cgroup lets through fails with ENXIO;
//   - /proc/driver/nvidia/gpus/<bus id>/information, listed in reverse
//     bus order (index follows the bus ID, as nvidia-smi's does);
//   - real shared objects with the driver's sonames (libcuda.so.1, ...;
//     built with gcc) and their soname links, in an ld cache written by
//     the host's ldconfig; a graphics library that compute,utility must
//     not bring; and a /usr/bin/nvidia-smi script that lists the GPU
//     nodes it can see, as `nvidia-smi -L` lists GPUs.
//
// GPU i has the UUID FakeGPUUUID(i).
func FakeNvidia(t testing.TB, n int) string {
	t.Helper()
	RequiresRoot(t)
	gcc := Require(t, "gcc")
	ldconfig := Require(t, "ldconfig")
	root := t.TempDir()
	mkdir := func(p string) {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, content string, mode os.FileMode) {
		mkdir(filepath.Dir(p))
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	mknod := func(p string, major, minor uint32) {
		mkdir(filepath.Dir(p))
		if err := unix.Mknod(filepath.Join(root, p), unix.S_IFCHR|0o666, int(unix.Mkdev(major, minor))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		mknod(fmt.Sprintf("/dev/nvidia%d", i), 195, uint32(i))
	}
	mknod("/dev/nvidiactl", 195, 255)
	mknod("/dev/nvidia-uvm", 511, 0)
	mknod("/dev/nvidia-uvm-tools", 511, 1)
	for i := n - 1; i >= 0; i-- {
		bus := fmt.Sprintf("00000000:%02x:00.0", 0x10+i)
		write("/proc/driver/nvidia/gpus/"+bus+"/information", fmt.Sprintf(
			"Model: \t\t NVIDIA Fake H100\nIRQ:   \t\t 42\nGPU UUID: \t %s\nVideo BIOS: \t ??.??.??.??.??\n"+
				"Bus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t %s\n"+
				"Device Minor: \t %d\nGPU Excluded:\t No\n", FakeGPUUUID(i), bus, i), 0o444)
	}
	src := filepath.Join(t.TempDir(), "lib.c")
	if err := os.WriteFile(src, []byte("int fake_driver_symbol(void) { return 42; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mkdir(FakeLibDir)
	for _, lib := range []string{"libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler", "libnvidia-nvvm", "libnvidia-glcore"} {
		file := lib + ".so." + FakeDriverVersion
		soname := lib + ".so.1"
		if lib == "libnvidia-nvvm" {
			soname = lib + ".so.4"
		}
		out, err := exec.Command(gcc, "-shared", "-fPIC", "-nostdlib", "-Wl,-soname,"+soname,
			"-o", filepath.Join(root, FakeLibDir, file), src).CombinedOutput()
		if err != nil {
			t.Fatalf("build fake %s: %v\n%s", file, err, out)
		}
		if err := os.Symlink(file, filepath.Join(root, FakeLibDir, soname)); err != nil {
			t.Fatal(err)
		}
	}
	write("/etc/ld.so.conf", FakeLibDir+"\n", 0o644)
	if out, err := exec.Command(ldconfig, "-r", root).CombinedOutput(); err != nil {
		t.Fatalf("ldconfig -r %s: %v\n%s", root, err, out)
	}
	write("/usr/bin/nvidia-smi", "#!/bin/sh\n# fake nvidia-smi -L: one line per GPU node this container sees\n"+
		"for d in /dev/nvidia[0-9]*; do [ -c \"$d\" ] && echo \"GPU ${d#/dev/nvidia}: NVIDIA Fake H100\"; done\n", 0o755)
	return root
}

// FakeGPUUUID is the UUID of FakeNvidia's GPU i.
func FakeGPUUUID(i int) string {
	return "GPU-" + strings.Repeat(fmt.Sprintf("%x", i%16), 8) + "-1111-2222-3333-444455556666"
}
