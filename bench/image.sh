#!/usr/bin/env bash
# bench/image.sh: pull of a ~200 MB (unpacked) Debian image from a local registry, berth
# vs `podman pull` vs `skopeo copy` side by side in one hyperfine run, and unpack
# throughput of its layer, berth's unpacker vs GNU `tar -xzf`.
#
# The registry is Debian's docker-registry on 127.0.0.1 (started here, stopped by pid at
# exit). The image is scripts/make-debian-image.sh's debootstrap minbase, imported and
# pushed by berth (one gzip layer). Every pull starts from an empty store (hyperfine
# --prepare), so every byte is fetched:
#   berth pull: a user's pull, through a berthd running on the fresh filesystem (started
#           by the prepare step): fetch + verify + gunzip + unpack into layers/, blob
#           kept (for push/save); durable in the background (pkg/image/durability.go)
#   berthd image pull: the same from the command line, which also waits for that
#           syncfs before it exits
#   podman: fetch + verify + gunzip + unpack into its overlay storage
#   skopeo: fetch + verify into an OCI layout directory, no unpack (a floor)
# and writes into a fresh ext4 filesystem (bench/fresh-fs.sh).
# The unpack round extracts into a tmpfs (in a private mount namespace), so that it
# measures the unpackers rather than ext4's inode allocator after repeated deletions.
# Env: RUNS (default 10), WARMUP (default 1), OUT (results dir).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10} WARMUP=${WARMUP:-1}
work=${BENCH_DIR:-/tmp/berth-bench-image}
OUT=${OUT:-$work/results}
scripts/install-prereqs.sh bench
make -s build
fixture=.cache/fixtures/debian-minbase.tar
scripts/make-debian-image.sh "$fixture"
go build -o "$work/bin/unpack" ./bench/unpack
rm -rf "$work/stores" && mkdir -p "$work/stores" "$work/registry" "$OUT"
berthd=$PWD/bin/berthd

# --- registry --------------------------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/registry/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry/storage}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
regpid=$!
trap 'kill "$regpid" 2>/dev/null; wait "$regpid" 2>/dev/null || true; [ ! -x "$work/with-berthd.sh" ] || "$work/with-berthd.sh" stop' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
ref=127.0.0.1:$port/bench/debian:bookworm

# --- the image ---------------------------------------------------------------------------
src=$work/stores/source
"$berthd" image --root "$src" import "$fixture" bench/debian:bookworm >/dev/null
"$berthd" image --root "$src" push bench/debian:bookworm "$ref" >/dev/null
layer=$(ls -S "$src/blobs/sha256" | head -1)
echo "image: $(du -sm "$fixture" | cut -f1) MB tar, layer $(( $(stat -c %s "$src/blobs/sha256/$layer") / 1000000 )) MB gzip"

# --- pull --------------------------------------------------------------------------------
# Each pull gets a fresh ext4 (bench/fresh-fs.sh), in a private mount namespace.
mnt=$work/mnt
cat >"$work/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$mnt/podman/storage"
runroot = "$mnt/podman/run"
CONF
fresh="$PWD/bench/fresh-fs.sh $work/fs.img $mnt"
# with-berthd.sh [fresh|stop]: stops the berthd a previous run started (by pid), then
# makes the fresh filesystem and starts a berthd on it, ready when the script ends
# ("fresh": no berthd; "stop": only the stop).
sock=$work/berthd.sock
: >"$work/berthd.pid"
cat >"$work/with-berthd.sh" <<PREP
#!/bin/bash
set -e
if [ -s $work/berthd.pid ]; then
	pid=\$(cat $work/berthd.pid)
	kill \$pid 2>/dev/null || true
	while kill -0 \$pid 2>/dev/null; do sleep 0.02; done
	: >$work/berthd.pid
fi
[ "\${1:-}" = stop ] && exit 0
$fresh
[ "\${1:-}" = fresh ] && exit 0
rm -f $sock
$berthd --root $mnt/berth -H unix://$sock --config-file /dev/null --cgroup-parent /berth-bench-image >>$work/berthd.log 2>&1 &
echo \$! >$work/berthd.pid
for _ in \$(seq 200); do [ -S $sock ] && exit 0; sleep 0.02; done
exit 1
PREP
chmod +x "$work/with-berthd.sh"
fresh="$work/with-berthd.sh fresh"
CONTAINERS_STORAGE_CONF=$work/storage.conf unshare --mount --propagation private -- \
	hyperfine --style basic -N --warmup "$WARMUP" --runs "$RUNS" \
	--export-json "$OUT/pull.json" --export-markdown "$OUT/pull.md" \
	--prepare "$work/with-berthd.sh" -n "berth pull" "bin/berth -H unix://$sock pull -q $ref" \
	--prepare "$fresh" -n "berthd image pull (command line)" "$berthd image --root $mnt/berth pull $ref" \
	--prepare "$fresh" -n "podman pull" "podman pull -q --tls-verify=false $ref" \
	--prepare "$fresh" -n "skopeo copy (no unpack)" \
	"skopeo copy -q --src-tls-verify=false docker://$ref oci:$mnt/skopeo:bookworm"
"$work/with-berthd.sh" stop
rmdir /sys/fs/cgroup/*/berth-bench-image 2>/dev/null || true
rm -f "$work/fs.img"

# --- unpack --------------------------------------------------------------------------------
blob=$src/blobs/sha256/$layer
mkdir -p "$work/tmpfs"
unshare --mount --propagation private -- bash -c "
	mount -t tmpfs -o size=2g tmpfs '$work/tmpfs'
	hyperfine --style basic -N --warmup '$WARMUP' --runs '$RUNS' \
		--export-json '$OUT/unpack.json' --export-markdown '$OUT/unpack.md' \
		--prepare 'bash -c \"rm -rf $work/tmpfs/u; mkdir $work/tmpfs/u\"' \
		-n 'berth unpack' '$work/bin/unpack $blob $work/tmpfs/u' \
		-n 'tar -xzf' 'tar -xzf $blob -C $work/tmpfs/u'"
for round in pull unpack; do
	echo "== $round: medians"
	python3 - "$OUT/$round.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"{r['command']:28} median {r['median']:6.2f} s  min {r['min']:6.2f} s")
PY
done
rm -rf "$work/stores"
echo "results: $OUT"
