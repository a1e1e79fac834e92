# shellcheck shell=bash
# bench/engine.sh: sourced by the engine benchmarks (daemon.sh, build.sh), after they set
# `work` (their directory): readies the peers from ../shared/peers (installed, images
# built, a private dockerd started; its README lists this machine's quirks), builds berth,
# and gives them start_berthd, import_busybox and stop_engine. berthd runs on its own
# root, socket and cgroup parent under $work; only processes started here are stopped, by
# pid.
PEERS=${PEERS:-$(cd ../shared/peers && pwd)}
OUT=${OUT:-$work/results}
# shellcheck source=/dev/null
. "$PEERS/lib.sh"
scripts/install-prereqs.sh bench
"$PEERS/setup-peers.sh" >/dev/null
LARGE_IMAGE=none "$PEERS/build-images.sh" >/dev/null
"$PEERS/daemons.sh" start dockerd >/dev/null || echo "dockerd did not start: docker rows are skipped"
make -s build
rm -rf "$work" && mkdir -p "$work" "$OUT"
sock=$work/berth.sock
berth() { bin/berth -H "unix://$sock" "$@"; }

# start_berthd PARENT: berthd with cgroup parent /PARENT, ready when it returns.
start_berthd() {
	berthd_parent=$1
	bin/berthd --root "$work/root" -H "unix://$sock" --config-file /dev/null --cgroup-parent "/$berthd_parent" \
		>"$work/berthd.log" 2>&1 &
	berthd_pid=$!
	for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
}

# import_busybox: the peers' busybox as "busybox" in berthd and in the private dockerd.
import_busybox() {
	tar -C "$BUSYBOX_ROOTFS" -cf "$work/busybox.tar" .
	berth import "$work/busybox.tar" busybox >/dev/null
	if dockerd_up; then
		"$DOCKER" image inspect busybox:latest >/dev/null 2>&1 || "$DOCKER" load -q -i "$BUSYBOX_DOCKER_TAR" >/dev/null
	fi
}

# stop_engine: berthd (its containers live on: callers remove theirs first) and dockerd.
stop_engine() {
	kill "$berthd_pid" 2>/dev/null && wait "$berthd_pid" 2>/dev/null || true
	"$PEERS/daemons.sh" stop dockerd >/dev/null 2>&1 || true
	rmdir /sys/fs/cgroup/*/"$berthd_parent" 2>/dev/null || true
}
