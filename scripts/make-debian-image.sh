#!/usr/bin/env bash
# make-debian-image.sh OUT.tar [PACKAGE,...]: a Debian 12 root filesystem
# (debootstrap --variant=minbase, plus the comma-separated packages) as a
# tarball that `berthd image import` takes: about 200 MB, as debootstrap
# leaves it (its .deb cache included, like ../shared/peers' large image).
# Idempotent: an existing OUT.tar is kept. The mirror is deb.debian.org.
set -euo pipefail
out=$1 include=${2:-}
[ -s "$out" ] && exit 0
if ! command -v debootstrap >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-debian.XXXXXX")
trap 'rm -rf "$work"' EXIT
args=(--variant=minbase)
[ -n "$include" ] && args+=(--include="$include")
debootstrap "${args[@]}" bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/log" 2>&1 ||
	{ tail -20 "$work/log" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$out.tmp" .
mv "$out.tmp" "$out"
