#!/usr/bin/env bash
# demo.sh: the main job for now: make a busybox bundle and run a container from it with
# berthd's OCI runtime, showing that it is contained; then make the base image
# berth/busybox from that rootfs and list it, as the daemon will run containers from
# images. Needs root and bin/berthd.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${DEMO_DIR:-/tmp/berth-demo}
scripts/make-bundle.sh "$work/bundle" sh -c '
echo "hello from a berth container"
echo "hostname:   $(hostname)"
echo "my pid:     $$ (pid 1 is me: $(cat /proc/1/comm))"
echo "processes:  $(ls /proc | grep -c "^[0-9]")"
echo "user:       $(id)"
echo "caps:       $(grep CapEff /proc/self/status)"
echo "memory max: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"
echo "pids max:   $(cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max)"
echo "root:       $(touch /x 2>&1 || true)"'
# Limits and a read-only root, set in the generated config.json.
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["root"]["readonly"] = True
c["linux"]["resources"].update({"memory": {"limit": 64 << 20}, "pids": {"limit": 64}})
c["linux"]["cgroupsPath"] = "/berth-demo/demo"
json.dump(c, open(p, "w"), indent=2)
PY
code=0
bin/berthd runtime --root "$work/state" run --bundle "$work/bundle" demo || code=$?
rmdir /sys/fs/cgroup/*/berth-demo /sys/fs/cgroup/berth-demo 2>/dev/null || true
echo "container exited with code $code"
# The same rootfs as the base image berth/busybox, in a demo image store.
tar -C "$work/bundle/rootfs" -cf "$work/busybox.tar" .
rm -rf "$work/images"
bin/berthd image --root "$work/images" import "$work/busybox.tar" berth/busybox >/dev/null
bin/berthd image --root "$work/images" ls
exit "$code"
