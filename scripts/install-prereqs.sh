#!/usr/bin/env bash
# install-prereqs.sh [bench]: install the Debian packages berth's build, demo and tests
# need (and, with "bench", the peers the benchmarks compare against). Idempotent: only
# missing packages are installed, and apt-get update runs only when something is missing.
set -euo pipefail
pkgs=(busybox-static isal libseccomp-dev libc6-dev gcc pkg-config iproute2 iptables util-linux procps docker-registry skopeo openssl systemd)
[ "${1:-}" = bench ] && pkgs+=(hyperfine crun runc podman skopeo debootstrap iperf3 bc)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || { echo "Go is missing: install Go 1.26 to /usr/local/go" >&2; exit 1; }
