#!/usr/bin/env bash
# bench/build.sh: the same 10-step Dockerfile built cold and fully cached, berth beside
# `podman build` (and docker's classic builder where the private dockerd runs), in one run.
#
# Cold: --no-cache, so every RUN, COPY and config step runs again (the base image is
# stored already). Cached: nothing changed since the last build, so every step is a hit.
# RUN steps have no network on every engine (--network none; berth's default is a network
# namespace of its own until bridge networking lands).
#
# Peers come from ../shared/peers (installed, images built, a private dockerd started);
# berthd runs on its own root, socket and cgroup parent under $work, and only processes
# this script started are stopped, by pid.
# Env: RUNS (default 10), WARMUP (default 2), OUT (results dir), PEERS (../shared/peers).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10} WARMUP=${WARMUP:-2}
PEERS=${PEERS:-$(cd ../shared/peers && pwd)}
work=${BENCH_DIR:-/tmp/berth-bench-build}
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
bin/berthd --root "$work/root" -H "unix://$sock" --config-file /dev/null --cgroup-parent /berth-bench-build \
	>"$work/berthd.log" 2>&1 &
berthd_pid=$!
cleanup() {
	kill "$berthd_pid" 2>/dev/null && wait "$berthd_pid" 2>/dev/null || true
	podman rmi -f bench/app >/dev/null 2>&1 || true
	"$PEERS/daemons.sh" stop dockerd >/dev/null 2>&1 || true
	rmdir /sys/fs/cgroup/*/berth-bench-build 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
tar -C "$BUSYBOX_ROOTFS" -cf "$work/busybox.tar" .
berth import "$work/busybox.tar" busybox >/dev/null
if dockerd_up; then
	"$DOCKER" image inspect busybox:latest >/dev/null 2>&1 || "$DOCKER" load -q -i "$BUSYBOX_DOCKER_TAR" >/dev/null
fi

# A small web app: 10 steps, 3 of them RUN, 2 COPY.
ctx=$work/context
mkdir -p "$ctx/src" "$ctx/static"
for i in $(seq 50); do echo "module $i" >"$ctx/src/mod$i.txt"; done
head -c 2000000 /dev/urandom >"$ctx/static/bundle.bin"
printf 'node_modules\n*.log\n' >"$ctx/.dockerignore"
# The base image is "busybox" on berth and docker, localhost/busybox on podman.
dockerfile() {
	cat <<EOF
FROM $1
WORKDIR /app
ENV APP_ENV=production PORT=8080
COPY src/ ./src/
RUN cat src/*.txt | wc -l > build-info.txt
COPY static/ ./static/
RUN sha256sum static/bundle.bin > static/SHA256SUMS
RUN adduser -D -H app 2>/dev/null || echo "app:x:1000:1000::/app:/bin/sh" >> /etc/passwd
EXPOSE 8080
CMD ["sh", "-c", "cat /app/build-info.txt"]
EOF
}
dockerfile busybox >"$ctx/Dockerfile"
dockerfile localhost/busybox >"$ctx/Dockerfile.podman"

berth build -q -t bench/app "$ctx" >/dev/null
podman build -q --network none -t bench/app -f "$ctx/Dockerfile.podman" "$ctx" >/dev/null
rows_cold=(-n "berth build --no-cache" "bin/berth -H unix://$sock build -q --no-cache -t bench/app $ctx"
	-n "podman build --no-cache" "podman build -q --no-cache --network none -t bench/app -f $ctx/Dockerfile.podman $ctx")
rows_cached=(-n "berth build (cached)" "bin/berth -H unix://$sock build -q -t bench/app $ctx"
	-n "podman build (cached)" "podman build -q --network none -t bench/app -f $ctx/Dockerfile.podman $ctx")
if dockerd_up; then
	DOCKER_BUILDKIT=0 "$DOCKER" build -q --network none -t bench/app "$ctx" >/dev/null
	rows_cold+=(-n "docker build --no-cache (classic)" "DOCKER_BUILDKIT=0 $DOCKER build -q --no-cache --network none -t bench/app $ctx")
	rows_cached+=(-n "docker build (classic, cached)" "DOCKER_BUILDKIT=0 $DOCKER build -q --network none -t bench/app $ctx")
fi

echo "== 1. cold build (10 steps, --no-cache)"
hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$OUT/cold.json" "${rows_cold[@]}"
echo "== 2. fully cached rebuild"
hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$OUT/cached.json" "${rows_cached[@]}"
berth builder prune -f >/dev/null

echo "== medians"
python3 - "$OUT"/cold.json "$OUT"/cached.json <<'PY'
import json, sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["results"]:
        print(f"{r['command']:40} median {r['median']*1000:8.1f} ms  min {r['min']*1000:8.1f} ms")
PY
