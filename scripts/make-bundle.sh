#!/usr/bin/env bash
# make-bundle.sh DIR [COMMAND...]: make an OCI bundle in DIR from Debian's busybox-static:
# rootfs/ with busybox and its applets, and config.json with Docker's defaults
# (written by `berthd runtime spec`). With no COMMAND the container runs `sh`.
# BUSYBOX names another static busybox binary (default /bin/busybox).
set -euo pipefail
dir=$1; shift
berthd=${BERTHD:-$(dirname "$0")/../bin/berthd}
busybox=${BUSYBOX:-/bin/busybox}
rm -rf "$dir"
mkdir -p "$dir"/rootfs/{bin,proc,sys,dev,etc,tmp,root}
cp "$busybox" "$dir/rootfs/bin/busybox"
for applet in $("$busybox" --list); do
	[ "$applet" = busybox ] || ln -s busybox "$dir/rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$dir/rootfs/etc/passwd"
echo "root:x:0:" >"$dir/rootfs/etc/group"
"$berthd" runtime spec --bundle "$dir" -- "${@:-sh}"
