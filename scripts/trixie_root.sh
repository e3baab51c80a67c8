#!/usr/bin/env bash
# A Debian trixie root holding QGIS from trixie-backports (3.44.x, Python 3.13, numpy 2):
# the current-QGIS CI stage runs Berunda there as a new user would.  Built once and cached
# (default /var/cache/berunda/trixie-qgis, or $BERUNDA_TRIXIE_ROOT); rebuilt when missing or
# when this recipe changes.  Fresh: 2-5 min alone here (debootstrap, then 490 packages),
# ~10 min beside another apt job.  Needs root (debootstrap, chroot, mount); installs debootstrap.
#
#   scripts/trixie_root.sh            build if needed, print the root's path
#   scripts/trixie_root.sh --run CMD  run CMD inside it (proc/dev mounted for the call)
set -euo pipefail
ROOT="${BERUNDA_TRIXIE_ROOT:-/var/cache/berunda/trixie-qgis}"
MIRROR="${BERUNDA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# pytest & co. and make: the stage runs tests/test_desktop_install.py and the engine tests there.
PACKAGES="qgis python3-qgis qgis-providers python3-pip xvfb xauth ca-certificates make python3-pytest python3-pytest-timeout python3-pytest-xdist"
# The stamp holds the recipe: a changed package list (or suite) rebuilds the root.
RECIPE="trixie-backports 1: $PACKAGES"
STAMP=".berunda-root-ready"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

mount_api() {   # proc, dev, dev/pts, dev/shm for apt, Xvfb and Python's multiprocessing
    local root="$1"
    mountpoint -q "$root/proc" || $SUDO mount -t proc proc "$root/proc"
    for dir in dev dev/pts dev/shm; do
        mkdir -p "$root/$dir"
        mountpoint -q "$root/$dir" || $SUDO mount --bind "/$dir" "$root/$dir"
    done
    # The host's name resolver and names: torchrun's rendezvous looks up this host's name.
    $SUDO cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    $SUDO cp -L /etc/hosts "$root/etc/hosts"
}

unmount_api() {  # innermost first; never leave /dev bound inside a folder someone may delete
    local root="$1"
    for dir in dev/shm dev/pts dev proc; do
        mountpoint -q "$root/$dir" 2>/dev/null && $SUDO umount -l "$root/$dir" || true
    done
}

build() {
    local tmp="$ROOT.partial"
    if ! command -v debootstrap >/dev/null && [ ! -x /usr/sbin/debootstrap ]; then
        echo "== installing debootstrap (apt)" >&2
        $SUDO apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends debootstrap >&2
    fi
    unmount_api "$tmp"
    $SUDO rm -rf --one-file-system "$tmp"
    $SUDO mkdir -p "$(dirname "$ROOT")"
    echo "== debootstrap trixie into $tmp ($MIRROR)" >&2
    $SUDO debootstrap --variant=minbase --include=ca-certificates trixie "$tmp" "$MIRROR" >&2
    echo "deb $MIRROR trixie-backports main" | $SUDO tee "$tmp/etc/apt/sources.list.d/backports.list" >/dev/null
    trap 'unmount_api "$tmp"' EXIT
    mount_api "$tmp"
    echo "== QGIS from trixie-backports into the root" >&2
    $SUDO chroot "$tmp" env DEBIAN_FRONTEND=noninteractive sh -c \
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends -t trixie-backports $PACKAGES && apt-get clean" >&2
    unmount_api "$tmp"
    trap - EXIT
    echo "$RECIPE" | $SUDO tee "$tmp/$STAMP" >/dev/null
    if [ -e "$ROOT" ]; then
        unmount_api "$ROOT"
        $SUDO rm -rf --one-file-system "$ROOT"
    fi
    $SUDO mv "$tmp" "$ROOT"
}

if [ "$(cat "$ROOT/$STAMP" 2>/dev/null)" != "$RECIPE" ]; then
    build
fi

if [ "${1:-}" = "--run" ]; then
    shift
    trap 'unmount_api "$ROOT"' EXIT
    mount_api "$ROOT"
    $SUDO chroot "$ROOT" "$@"
else
    echo "$ROOT"
fi
