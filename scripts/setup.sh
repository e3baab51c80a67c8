#!/usr/bin/env bash
# Idempotent set-up on Debian 12: QGIS 3.22 from apt, a .venv made from the
# system Python (so it sees PyQGIS) with the pinned dependencies, and the
# plugin made visible to qgis_process.  Safe to run again: each step is skipped
# when already done.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

APT_PACKAGES="qgis python3-qgis qgis-providers xvfb xauth"
if ! dpkg -s $APT_PACKAGES >/dev/null 2>&1; then
    echo "== installing QGIS from Debian (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $APT_PACKAGES
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv from /usr/bin/python3 (with system site-packages for PyQGIS)"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi

STAMP=.venv/.berunda-requirements
WANT="$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "== installing pinned Python dependencies (torch from local disk, onnx; numpy stays QGIS's)"
    # numpy follows QGIS: keep the one the system Python (QGIS's) has, whatever its major.
    QGIS_NUMPY="$(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)')"
    echo "numpy==$QGIS_NUMPY" > .venv/qgis-constraints.txt
    .venv/bin/python -m pip install -q -r requirements/requirements.txt -r requirements/dev.txt \
        -r requirements/onnx.txt -c requirements/constraints.txt -c .venv/qgis-constraints.txt
    [ "$(.venv/bin/python -c 'import numpy; print(numpy.__version__)')" = "$QGIS_NUMPY" ] \
        || { echo "pip replaced QGIS's numpy $QGIS_NUMPY in .venv; aborting" >&2; exit 1; }
    echo "$WANT" > "$STAMP"
fi

mkdir -p .build/plugins
[ -e .build/plugins/berunda ] || ln -s "$REPO" .build/plugins/berunda

if ! scripts/qgis_process plugins 2>/dev/null | grep -q "^\* *berunda"; then
    echo "== enabling the berunda plugin for qgis_process"
    scripts/qgis_process plugins enable berunda >/dev/null
fi
echo "== set-up complete"
