#!/usr/bin/env bash
# bench/runtime.sh: start-to-exit latency of `true` from one OCI bundle, berth vs crun vs
# runc (Debian's) and the kernel floor (unshare + chroot), side by side in one hyperfine
# run. The bundle's config comes from `crun spec` (args ["true"], no terminal), so all
# three runtimes get the same work. crun 1.8 refuses hybrid cgroup hosts whose v2
# hierarchy holds a controller, so (as ../shared/peers does) every row runs in a private
# mount namespace where /sys/fs/cgroup/unified/cgroup.controllers reads empty; the host's
# layout is not changed. Env: RUNS (default 30), WARMUP (default 5), OUT (results dir).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-30} WARMUP=${WARMUP:-5}
work=${BENCH_DIR:-/tmp/berth-bench-runtime}
OUT=${OUT:-$work/results}
scripts/install-prereqs.sh bench
rm -rf "$work" && mkdir -p "$work/state"/{berth,crun,runc} "$OUT"
scripts/make-bundle.sh "$work/bundle" true >/dev/null
(cd "$work/bundle" && rm config.json && crun spec)
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = ["true"]; c["process"]["terminal"] = False
json.dump(c, open(p, "w"), indent=2)
PY
: >"$work/empty"
cat >"$work/masked.sh" <<MASK
#!/bin/bash
if [ -n "\$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then
	mount --bind "$work/empty" /sys/fs/cgroup/unified/cgroup.controllers
fi
exec "\$@"
MASK
chmod +x "$work/masked.sh"
b=$work/bundle
berthd=$PWD/bin/berthd
# Two rounds. "spaced": 50 ms idle before each start, as when one person
# starts one container; moving a process between v1 cgroups then first waits
# for an RCU grace period (5-15 ms here) in every runtime that uses
# cgroup.procs. "back-to-back": starts follow each other at once and the
# kernel skips that wait.
for round in spaced back-to-back; do
	prepare=()
	[ "$round" = spaced ] && prepare=(--prepare "sleep 0.05")
	echo "== $round"
	unshare --mount --propagation private -- "$work/masked.sh" \
		hyperfine --style basic -N --warmup "$WARMUP" --runs "$RUNS" "${prepare[@]}" \
		--export-json "$OUT/runtime-$round.json" --export-markdown "$OUT/runtime-$round.md" \
		-n "berthd runtime run" "$berthd runtime --root $work/state/berth run --bundle $b bench" \
		-n "crun run" "crun --root $work/state/crun run --bundle $b bench" \
		-n "runc run" "runc --root $work/state/runc run --bundle $b bench" \
		-n "unshare pid,mnt,uts,ipc,net + chroot (floor)" "unshare --fork --pid --mount --uts --ipc --net chroot $b/rootfs /bin/true"
done
rmdir /sys/fs/cgroup/*/berth/bench /sys/fs/cgroup/*/berth /sys/fs/cgroup/*/bench 2>/dev/null || true
for round in spaced back-to-back; do
	echo "== $round: medians"
	python3 - "$OUT/runtime-$round.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"{r['command']:48} median {r['median']*1000:6.1f} ms  min {r['min']*1000:6.1f} ms")
PY
done
echo "results: $OUT"
