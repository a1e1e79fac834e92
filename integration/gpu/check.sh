#!/usr/bin/env bash
# integration/gpu/check.sh: the GPU checks, on a machine with an NVIDIA GPU and its driver.
#
# Starts berthd on a scratch root, imports the busybox base image (made from busybox-static, as
# `make demo` does), builds on it an image that adds the host's C library (nvidia-smi is a glibc
# program; the driver's libraries and nvidia-smi itself come from berthd's --gpus), and runs
# `nvidia-smi -L` in containers:
#   --gpus all        lists every GPU the host has;
#   --gpus device=0   lists exactly one: the host's GPU 0, by UUID;
#   no --gpus         sees no GPU (no device node, no nvidia-smi).
# Prints what each saw and exits non-zero if a check fails. berthd and the containers are
# stopped, and its root removed, at the end.
#
# Needs root, bin/berthd and bin/berth (`make build` makes them when missing), and a static
# busybox (/bin/busybox from busybox-static, or BUSYBOX=PATH). GPU_CHECK_DRIVER_ROOT runs it
# on a fake driver root instead (the project's test of this script; see integration/gpu_test.go).
set -euo pipefail
cd "$(dirname "$0")/../.."
driver_root=${GPU_CHECK_DRIVER_ROOT:-/}
[ -x bin/berthd ] && [ -x bin/berth ] || make build
work=$(mktemp -d /tmp/berth-gpu-check.XXXXXX)
sock=$work/berth.sock
tag=$$
cgroup=berth-gpu-check-$tag
failed=0
fail() { echo "FAIL: $*"; failed=1; }

gpus=$(ls "$driver_root/proc/driver/nvidia/gpus" 2>/dev/null | wc -l)
[ "$gpus" -gt 0 ] || { echo "no NVIDIA GPU under $driver_root/proc/driver/nvidia/gpus"; exit 1; }
smi=$driver_root/usr/bin/nvidia-smi
[ -x "$smi" ] || smi=$(command -v nvidia-smi) || { echo "no nvidia-smi on this machine"; exit 1; }
echo "== host: $gpus GPU(s)"
if [ "$driver_root" = / ]; then nvidia-smi -L; fi

bin/berthd --root "$work/root" -H "unix://$sock" --config-file /dev/null --cgroup-parent "/$cgroup" \
	--bridge "brgpu$((tag % 100000))" --bip "10.87.$((tag % 250)).1/24" \
	--nvidia-driver-root "$driver_root" --cdi-spec-dir "$work/cdi" >"$work/berthd.log" 2>&1 &
berthd_pid=$!
berth() { bin/berth -H "unix://$sock" "$@"; }
stop() {
	berth rm -f $(berth ps -aq 2>/dev/null) >/dev/null 2>&1 || true
	kill "$berthd_pid" 2>/dev/null && wait "$berthd_pid" 2>/dev/null || true
	rmdir /sys/fs/cgroup/*/"$cgroup" /sys/fs/cgroup/"$cgroup" 2>/dev/null || true
	if [ "$failed" != 0 ]; then echo "== berthd log"; cat "$work/berthd.log"; fi
	rm -rf "$work"
}
trap stop EXIT
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done

# The base image, then the host's C library on it: the loader and every library nvidia-smi
# links, at their host paths (not the driver's libraries: berthd mounts those).
scripts/make-bundle.sh "$work/bundle" true >/dev/null
tar -C "$work/bundle/rootfs" -cf "$work/busybox.tar" .
berth import "$work/busybox.tar" berth/busybox >/dev/null
mkdir -p "$work/ctx/rootfs/etc"
if ldd "$smi" >/dev/null 2>&1; then
	for lib in $(ldd "$smi" | grep -o '/[^ ]*' | grep -v -e libnvidia -e libcuda); do
		mkdir -p "$work/ctx/rootfs$(dirname "$lib")"
		cp -L "$lib" "$work/ctx/rootfs$lib"
		dirname "$lib" >>"$work/ctx/rootfs/etc/ld.so.conf"
	done
fi
touch "$work/ctx/rootfs/etc/ld.so.conf"
printf 'FROM berth/busybox\nCOPY rootfs/ /\n' >"$work/ctx/Dockerfile"
berth build -q -t berth/gpu-check "$work/ctx" >/dev/null

echo "== berth run --gpus all berth/gpu-check nvidia-smi -L"
out=$(berth run --rm --gpus all berth/gpu-check nvidia-smi -L 2>&1) || fail "--gpus all: exit $?"
echo "$out"
[ "$(grep -c '^GPU ' <<<"$out")" = "$gpus" ] || fail "--gpus all: want $gpus GPU(s)"

echo "== berth run --gpus device=0 berth/gpu-check nvidia-smi -L"
out=$(berth run --rm --gpus device=0 berth/gpu-check nvidia-smi -L 2>&1) || fail "--gpus device=0: exit $?"
echo "$out"
[ "$(grep -c '^GPU ' <<<"$out")" = 1 ] || fail "--gpus device=0: want exactly one GPU"
if [ "$driver_root" = / ]; then
	want=$(nvidia-smi -L | head -1 | grep -o 'UUID: [^)]*')
	grep -qF "$want" <<<"$out" || fail "--gpus device=0: want the host's GPU 0 ($want)"
fi

echo "== berth run berth/gpu-check sh -c 'ls /dev/nvidia*; nvidia-smi -L' (no --gpus)"
out=$(berth run --rm berth/gpu-check sh -c 'ls /dev/nvidia* 2>&1; nvidia-smi -L 2>&1; true')
echo "$out"
if grep -q '^GPU ' <<<"$out" || ! grep -q 'nvidia-smi: not found' <<<"$out"; then fail "no --gpus: a GPU is visible"; fi

echo "== berth info"
berth info | sed -n '/CDI Spec/,$p'
if [ "$failed" = 0 ]; then echo "GPU CHECK PASSED"; else echo "GPU CHECK FAILED"; exit 1; fi
