#!/usr/bin/env bash
# fresh-fs.sh IMG MNT: a new, empty ext4 filesystem (a 4 GB sparse file) mounted on MNT,
# for hyperfine --prepare. Every pull in bench/image.sh so writes into a filesystem as a
# first pull on a workstation does (inode tables initialised by mkfs, not lazily in the
# background during the run): ext4 makes inode allocation slow for a minute after
# mass deletions (recently_deleted), which would otherwise tax whichever tool runs next.
set -euo pipefail
img=$1 mnt=$2
mountpoint -q "$mnt" && umount "$mnt"
truncate -s 4G "$img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
mkdir -p "$mnt"
mount -o loop "$img" "$mnt"
