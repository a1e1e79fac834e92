#!/usr/bin/env bash
# install.sh install|uninstall: berth's files on this machine, as `make install` and
# `make uninstall` run it. PREFIX (default /usr/local) holds the binaries and the systemd
# units; DESTDIR stages everything under another root (packaging; no group is made and
# systemd is not told then).
#
# install: bin/berthd, bin/berth and bin/berth-monitor (beside berthd, where it looks for
# it), contrib/systemd/berthd.{service,socket} (the service
# runs $PREFIX/bin/berthd), /etc/berth/daemon.json unless one exists, and the berth group.
# uninstall: the binaries and units. /etc/berth and the data root (/var/lib/berth) stay,
# unless PURGE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:?usage: install.sh install|uninstall}
prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}
bindir=$prefix/bin
unitdir=$prefix/lib/systemd/system
systemd_running() { [ -z "$dest" ] && [ -d /run/systemd/system ]; }

case $action in
install)
	install -D -m 0755 bin/berthd "$dest$bindir/berthd"
	install -D -m 0755 bin/berth "$dest$bindir/berth"
	install -D -m 0755 bin/berth-monitor "$dest$bindir/berth-monitor"
	mkdir -p "$dest$unitdir"
	sed "s|@BINDIR@|$bindir|g" contrib/systemd/berthd.service >"$dest$unitdir/berthd.service"
	install -m 0644 contrib/systemd/berthd.socket "$dest$unitdir/berthd.socket"
	chmod 0644 "$dest$unitdir/berthd.service"
	if [ ! -e "$dest/etc/berth/daemon.json" ]; then
		install -D -m 0644 contrib/daemon.json "$dest/etc/berth/daemon.json"
	fi
	if [ -z "$dest" ] && ! getent group berth >/dev/null; then
		groupadd --system berth
	fi
	if systemd_running; then
		systemctl daemon-reload
	fi
	echo "installed in $dest$prefix; start with: systemctl enable --now berthd.socket berthd.service"
	;;
uninstall)
	if systemd_running; then
		systemctl disable --now berthd.service berthd.socket 2>/dev/null || true
	fi
	rm -f "$dest$bindir/berthd" "$dest$bindir/berth" "$dest$bindir/berth-monitor" "$dest$unitdir/berthd.service" "$dest$unitdir/berthd.socket"
	if systemd_running; then
		systemctl daemon-reload
	fi
	if [ "${PURGE:-0}" = 1 ]; then
		rm -rf "$dest/etc/berth" "$dest/var/lib/berth"
		echo "removed, with /etc/berth and /var/lib/berth"
	else
		echo "removed; /etc/berth and /var/lib/berth stay (PURGE=1 removes them)"
	fi
	;;
*)
	echo "usage: install.sh install|uninstall" >&2
	exit 2
	;;
esac
