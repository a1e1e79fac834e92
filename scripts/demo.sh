#!/usr/bin/env bash
# demo.sh: the main job: start berthd on a demo root and socket, make the base image
# berth/busybox from Debian's busybox-static (no network needed), and run containers from
# it with the berth client: one that shows it is contained, one in the background that
# `ps`, `logs` and `exec` look at; then build an image from a Dockerfile twice (the second
# time from the cache) and run it; then serve a file from it on a port published on
# 127.0.0.1. berthd and the containers are stopped at the end.
# Needs root and bin/berthd, bin/berth.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${DEMO_DIR:-/tmp/berth-demo}
sock=$work/berth.sock
rm -rf "$work" && mkdir -p "$work"
bin/berthd --root "$work/root" -H "unix://$sock" --config-file /dev/null --cgroup-parent /berth-demo \
	>"$work/berthd.log" 2>&1 &
berthd_pid=$!
berth() { bin/berth -H "unix://$sock" "$@"; }
stop() {
	berth rm -f demo-web demo-http >/dev/null 2>&1 || true
	kill "$berthd_pid" 2>/dev/null && wait "$berthd_pid" 2>/dev/null || true
	rmdir /sys/fs/cgroup/*/berth-demo /sys/fs/cgroup/berth-demo 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

# The base image: busybox-static and its applets, as a rootfs tarball.
scripts/make-bundle.sh "$work/bundle" true >/dev/null
tar -C "$work/bundle/rootfs" -cf "$work/busybox.tar" .
berth import "$work/busybox.tar" berth/busybox >/dev/null
berth images

echo "== berth run --rm --memory 64m --pids-limit 64 --read-only berth/busybox"
code=0
berth run --rm --memory 64m --pids-limit 64 --read-only --hostname demo berth/busybox sh -c '
echo "hello from a berth container"
echo "hostname:   $(hostname)"
echo "my pid:     $$ (pid 1 is me: $(cat /proc/1/comm))"
echo "processes:  $(ls /proc | grep -c "^[0-9]")"
echo "user:       $(id)"
echo "caps:       $(grep CapEff /proc/self/status)"
echo "memory max: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"
echo "pids max:   $(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)"
echo "root:       $(touch /x 2>&1 || true)"
exit 3' || code=$?
echo "the container exited with code $code (berth run exits with it)"

echo "== a container in the background: ps, logs, exec, stop"
berth run -d --name demo-web berth/busybox sh -c 'trap "exit 0" TERM; while :; do date; sleep 1; done' >/dev/null
sleep 1.2
berth ps
berth logs demo-web
berth exec demo-web sh -c 'echo "exec sees: $(ps | wc -l) lines of ps, pid 1 is $(cat /proc/1/comm)"'
berth stop demo-web >/dev/null
berth ps -a --format '{{.Names}}: {{.Status}}'

echo "== berth build: a Dockerfile on berth/busybox, built, rebuilt from the cache, run"
mkdir -p "$work/app"
echo 'echo "hello from a built image: $(cat /app/version)"' >"$work/app/hello.sh"
cat >"$work/app/Dockerfile" <<'DOCKERFILE'
FROM berth/busybox
WORKDIR /app
COPY hello.sh .
RUN date -u +%Y-%m-%d > version
CMD ["sh", "hello.sh"]
DOCKERFILE
berth build -t demo/hello "$work/app"
berth build -t demo/hello "$work/app" | grep -c "Using cache" | sed 's/^/cached steps on the rebuild: /'
berth run --rm demo/hello

echo "== the bridge network: that image's server on a published port of 127.0.0.1"
echo "hello over the bridge" >"$work/index.html"
berth run -d --name demo-http -p 127.0.0.1::80 -v "$work/index.html:/www/index.html:ro" demo/hello \
	busybox httpd -f -p 80 -h /www >/dev/null
port=$(berth port demo-http 80/tcp)
echo "published: 80/tcp -> $port; the container is at $(berth inspect -f '{{.NetworkSettings.Networks.bridge.IPAddress}}' demo-http)"
for _ in $(seq 50); do busybox wget -qO- "http://$port/" 2>/dev/null && break; sleep 0.1; done
berth rm -f demo-http >/dev/null
