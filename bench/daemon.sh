#!/usr/bin/env bash
# bench/daemon.sh: the engine end to end, berth beside podman, docker and crun in one run.
#
#   1. `run --rm busybox true`, start to exit: berth, podman (--network none), docker
#      (dockerd 20.10 from docker.io, --network none) and `crun run` of a bundle.
#   2. 20 × `run -d busybox sleep 60`, in sequence and in parallel: berth, podman, docker.
#   3. Memory: berthd RSS idle after start, right after the runs above and idle 11 s
#      later; RSS and PSS of berth-monitor per container, beside conmon and
#      containerd-shim-runc-v2.
#   4. `berth ps -a` with 1000 containers.
#
# Peers and berthd are set up by bench/engine.sh.
# Env: RUNS (default 20), WARMUP (default 3), N (containers for step 2, default 20),
# PS_N (default 1000), OUT (results dir), PEERS (default ../shared/peers).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20} WARMUP=${WARMUP:-3} N=${N:-20} PS_N=${PS_N:-1000}
work=${BENCH_DIR:-/tmp/berth-bench-daemon}
# shellcheck source=bench/engine.sh
. bench/engine.sh
start_berthd berth-bench
cleanup() {
	berth ps -aq 2>/dev/null | xargs -r bin/berth -H "unix://$sock" rm -f >/dev/null 2>&1 || true
	podman ps -aq --filter "label=$BENCH_LABEL" | xargs -r podman rm -f >/dev/null 2>&1 || true
	if dockerd_up; then
		"$DOCKER" ps -aq --filter "label=$BENCH_LABEL" | xargs -r "$DOCKER" rm -f >/dev/null 2>&1 || true
	fi
	stop_engine
}
trap cleanup EXIT
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
pss_kb() { awk '/^Pss:/ {s += $2} END {print s}' "/proc/$1/smaps_rollup"; }
# mem_line LABEL PID...: the processes' average RSS and PSS.
mem_line() {
	local label=$1 n=0 rss=0 pss=0 p
	shift
	for p in "$@"; do n=$((n + 1)) rss=$((rss + $(rss_kb "$p"))) pss=$((pss + $(pss_kb "$p"))); done
	if [ "$n" -gt 0 ]; then
		echo "$label: $n running, RSS $((rss / n)) KiB, PSS $((pss / n)) KiB each" | tee -a "$OUT/many.txt"
	fi
}
idle_start=$(rss_kb "$berthd_pid")
import_busybox

echo "== 1. run --rm busybox true"
# berth and crun, whose times the target compares, run one after the other in
# one hyperfine, so that both meet the machine in the same state; podman and
# docker follow in another (they leave storage and daemons busy behind them).
# crun refuses this machine's hybrid cgroups unless cgroup.controllers reads
# empty, so that round runs masked (berth's client does not care). No shell:
# -N times the commands themselves.
run_masked hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$OUT/run-crun.json" \
	-n "berth run --rm --network none" "bin/berth -H unix://$sock run --rm --network none busybox true" \
	-n "crun run (bundle)" "crun --root $CRUN_ROOT run --bundle $BUNDLE bench-crun"
rows=(-n "podman run --rm --network none" "podman run --rm --network none localhost/busybox true")
if dockerd_up; then
	rows+=(-n "docker run --rm --network none" "$DOCKER run --rm --network none busybox true")
fi
hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$OUT/run.json" "${rows[@]}"

echo "== 2. $N × run -d busybox sleep 60"
many() { # ENGINE MODE CMD...: time N starts, in sequence or in parallel
	local engine=$1 mode=$2 start end i
	shift 2
	start=$(date +%s.%N)
	if [ "$mode" = sequential ]; then
		for i in $(seq "$N"); do "$@" >/dev/null; done
	else
		local pids=()
		for i in $(seq "$N"); do
			"$@" >/dev/null &
			pids+=($!)
		done
		wait "${pids[@]}" # not berthd, also our child
	fi
	end=$(date +%s.%N)
	printf '%-8s %-10s %6.2f s for %d\n' "$engine" "$mode" "$(echo "$end - $start" | bc)" "$N" | tee -a "$OUT/many.txt"
}
for mode in sequential parallel; do
	many berth "$mode" berth run -d --network none -l "$BENCH_LABEL" busybox sleep 60
	# The watcher's memory per container while N run (sequential round only).
	if [ "$mode" = sequential ]; then
		# berthd's children with a container under them: shims become
		# berth-monitor once their container runs. The idle spare shim has
		# a child too, the spare init: it is left out by its arguments.
		pids=()
		for p in $(pgrep -P "$berthd_pid" || true); do
			tr '\0' ' ' <"/proc/$p/cmdline" | grep -q ' __berth_shim - $' && continue
			pgrep -P "$p" >/dev/null && pids+=("$p")
		done
		mem_line "berth-monitor" "${pids[@]}"
	fi
	berth ps -aq | xargs -r bin/berth -H "unix://$sock" rm -f >/dev/null
	many podman "$mode" podman run -d --network none -l "$BENCH_LABEL" localhost/busybox sleep 60
	if [ "$mode" = sequential ]; then
		pids=()
		for id in $(podman ps -q --no-trunc --filter "label=$BENCH_LABEL"); do pids+=($(pgrep -f "conmon .*-c $id" || true)); done
		mem_line "podman conmon" "${pids[@]}"
	fi
	podman ps -aq --filter "label=$BENCH_LABEL" | xargs -r podman rm -f -t 0 >/dev/null
	if dockerd_up; then
		many docker "$mode" "$DOCKER" run -d --network none -l "$BENCH_LABEL" busybox sleep 60
		if [ "$mode" = sequential ]; then
			pids=()
			for id in $("$DOCKER" ps -q --no-trunc --filter "label=$BENCH_LABEL"); do
				pids+=($(pgrep -f "containerd-shim-runc-v2 .*-id $id" || true))
			done
			mem_line "docker containerd-shim-runc-v2" "${pids[@]}"
		fi
		"$DOCKER" ps -aq --filter "label=$BENCH_LABEL" | xargs -r "$DOCKER" rm -f >/dev/null
	fi
done

echo "== 3. memory"
busy_after=$(rss_kb "$berthd_pid")
# Idle: berthd gives freed heap back once the API was quiet for 5 s (its
# check runs every 5 s), so 11 s on.
sleep 11
idle_after=$(rss_kb "$berthd_pid")
echo "berthd RSS: $idle_start KiB idle at start, $busy_after KiB right after the runs above, $idle_after KiB idle 11 s later" | tee "$OUT/mem.txt"

echo "== 4. ps -a with $PS_N containers"
for i in $(seq "$PS_N"); do berth create busybox true >/dev/null; done
hyperfine --style basic --warmup 2 --runs 10 --export-json "$OUT/ps.json" \
	-n "berth ps -a ($PS_N containers)" "bin/berth -H unix://$sock ps -a"

echo "== medians"
python3 - "$OUT"/run-crun.json "$OUT"/run.json "$OUT"/ps.json <<'PY'
import json, sys
med = {}
for f in sys.argv[1:]:
    for r in json.load(open(f))["results"]:
        med[r['command']] = r['median']
        print(f"{r['command']:40} median {r['median']*1000:7.1f} ms  min {r['min']*1000:7.1f} ms")
b, c = med["berth run --rm --network none"], med["crun run (bundle)"]
print(f"berth run --rm / crun run: {b / c:.2f}; podman / berth: {med['podman run --rm --network none'] / b:.1f}")
PY
cat "$OUT/many.txt" "$OUT/mem.txt"
