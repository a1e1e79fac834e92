#!/usr/bin/env bash
# bench/build.sh: the same 10-step Dockerfile built cold and fully cached, berth beside
# `podman build` (and docker's classic builder where the private dockerd runs), in one run.
#
# Cold: --no-cache, so every RUN, COPY and config step runs again (the base image is
# stored already). Cached: nothing changed since the last build, so every step is a hit.
# RUN steps have no network on every engine (--network none).
#
# Peers and berthd are set up by bench/engine.sh.
# Env: RUNS (default 10), WARMUP (default 2), OUT (results dir), PEERS (../shared/peers).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10} WARMUP=${WARMUP:-2}
work=${BENCH_DIR:-/tmp/berth-bench-build}
# shellcheck source=bench/engine.sh
. bench/engine.sh
start_berthd berth-bench-build
cleanup() {
	podman rmi -f bench/app >/dev/null 2>&1 || true
	stop_engine
}
trap cleanup EXIT
import_busybox

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

berth build -q --network none -t bench/app "$ctx" >/dev/null
podman build -q --network none -t bench/app -f "$ctx/Dockerfile.podman" "$ctx" >/dev/null
rows_cold=(-n "berth build --no-cache" "bin/berth -H unix://$sock build -q --no-cache --network none -t bench/app $ctx"
	-n "podman build --no-cache" "podman build -q --no-cache --network none -t bench/app -f $ctx/Dockerfile.podman $ctx")
rows_cached=(-n "berth build (cached)" "bin/berth -H unix://$sock build -q --network none -t bench/app $ctx"
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
