#!/usr/bin/env bash
# bench/network.sh: what the bridge network costs, berth beside podman (netavark) in one run.
#
#   1. Start to exit of `run --rm busybox true` with --network none and with the default
#      bridge: berth and podman. The difference is the network's setup and teardown.
#   2. TCP throughput with iperf3 (5 s, one stream) into a container: to its address on the
#      bridge, and through a port published on 127.0.0.1. berth and podman.
#
# The iperf3 image is made here from the host's iperf3 and the libraries it links. Peers
# and berthd are set up by bench/engine.sh; traffic stays on 127.0.0.1 and the engines'
# own bridges.
# Env: RUNS (default 20), WARMUP (default 3), SECONDS_PER_RUN (iperf3 -t, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20} WARMUP=${WARMUP:-3} T=${SECONDS_PER_RUN:-5}
work=${BENCH_DIR:-/tmp/berth-bench-network}
# shellcheck source=bench/engine.sh
. bench/engine.sh
start_berthd berth-bench-network
cleanup() {
	berth rm -f bench-iperf >/dev/null 2>&1 || true
	podman rm -f bench-iperf >/dev/null 2>&1 || true
	podman rmi -f localhost/bench/iperf3 >/dev/null 2>&1 || true
	stop_engine
}
trap cleanup EXIT
import_busybox
command -v iperf3 >/dev/null || apt-get install -y -qq iperf3 >/dev/null

# An image of iperf3 and the libraries it links, for both engines.
rootfs=$work/iperf3-rootfs
mkdir -p "$rootfs/usr/bin" "$rootfs/tmp"
cp "$(command -v iperf3)" "$rootfs/usr/bin/"
for lib in $(ldd "$(command -v iperf3)" | grep -o '/[^ ]*'); do
	mkdir -p "$rootfs$(dirname "$lib")"
	cp -L "$lib" "$rootfs$lib"
done
tar -C "$rootfs" -cf "$work/iperf3.tar" .
berth import "$work/iperf3.tar" bench/iperf3 >/dev/null
podman import -q "$work/iperf3.tar" localhost/bench/iperf3 >/dev/null

echo "== 1. run --rm busybox true: --network none vs the default bridge"
hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$OUT/start.json" \
	-n "berth --network none" "bin/berth -H unix://$sock run --rm --network none busybox true" \
	-n "berth bridge" "bin/berth -H unix://$sock run --rm busybox true" \
	-n "podman --network none" "podman run --rm --network none localhost/busybox true" \
	-n "podman bridge (netavark)" "podman run --rm localhost/busybox true"

echo "== 2. iperf3 TCP into a container, ${T} s"
throughput() { # NAME HOST PORT
	local bps
	bps=$(iperf3 -c "$2" -p "$3" -t "$T" -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])')
	printf '%-34s %8.2f Gbit/s\n' "$1" "$(echo "$bps / 1000000000" | bc -l)" | tee -a "$OUT/iperf.txt"
}
: >"$OUT/iperf.txt"
berth run -d --name bench-iperf -p 127.0.0.1:15201:5201 bench/iperf3 iperf3 -s >/dev/null
ip=$(berth inspect -f '{{.NetworkSettings.Networks.bridge.IPAddress}}' bench-iperf)
sleep 0.5
throughput "berth, container address" "$ip" 5201
throughput "berth, published on 127.0.0.1" 127.0.0.1 15201
berth rm -f bench-iperf >/dev/null
podman run -d --name bench-iperf -p 127.0.0.1:15202:5201 localhost/bench/iperf3 iperf3 -s >/dev/null
ip=$(podman inspect -f '{{.NetworkSettings.IPAddress}}' bench-iperf)
sleep 0.5
throughput "podman, container address" "$ip" 5201
throughput "podman, published on 127.0.0.1" 127.0.0.1 15202
podman rm -f bench-iperf >/dev/null

echo "== medians"
python3 - "$OUT"/start.json <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"{r['command']:34} median {r['median']*1000:7.1f} ms  min {r['min']*1000:7.1f} ms")
PY
cat "$OUT/iperf.txt"
