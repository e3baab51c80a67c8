#!/usr/bin/env bash
# CI stage on a current QGIS: 3.44.x from Debian trixie-backports (Python 3.13, numpy 2), in a
# trixie root (scripts/trixie_root.sh, built once and cached), run the way a new user runs it:
# QGIS's own Python, a fresh profile, PYTHONPATH unset, and **no network inside the root**
# (every proxy points at a closed loopback port).  Berunda's dependencies come from a
# wheelhouse that this machine (the "connected machine") makes with the very pip download
# command the plugin prints for the root's Python and platform; cached per command.
#
# Inside (.ci/current_qgis_inside.sh): the user path (tests/test_desktop_install.py:
# install_dependencies from the wheelhouse → diagnostics ready → train → classify → evaluate
# through qgis_process, the desktop under Xvfb), then the suite's engine, command-line and
# Processing tests with numpy 2 against the packages the user path installed.
# Screenshots come back to tests/artifacts/qgis-3.44/.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
DATA="${BERUNDA_DATA:-$REPO/../shared/data/dubai}"
CACHE="${BERUNDA_CI_CACHE:-/var/cache/berunda}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

started=$SECONDS
ROOT="$(scripts/trixie_root.sh)"
echo "== trixie root ready: $ROOT ($((SECONDS - started)) s)"
WORK="$ROOT/ci"

cleanup() {
    mountpoint -q "$WORK/wheelhouse" 2>/dev/null && $SUDO umount -l "$WORK/wheelhouse" || true
}
trap cleanup EXIT
cleanup
$SUDO rm -rf --one-file-system "$WORK"
$SUDO mkdir -p "$WORK/repo" "$WORK/shared/data" "$WORK/home" "$WORK/wheelhouse"
# The working tree as a clean clone holds it: tracked files and untracked, unignored ones.
git ls-files -z -co --exclude-standard | $SUDO tar --null -T - -cf - | $SUDO tar -xf - -C "$WORK/repo"
$SUDO cp -r "$DATA" "$WORK/shared/data/dubai"

# The wheelhouse: the download command the plugin prints inside the root, run out here.
in_root() { scripts/trixie_root.sh --run env -i PATH=/usr/bin:/bin HOME=/ci/home LANG=C.UTF-8 "$@"; }
COMMAND_JSON="$(in_root python3 -c '
import json, sys
sys.path.insert(0, "/ci/repo/.build/plugins")
import os; os.makedirs("/ci/repo/.build/plugins", exist_ok=True)
os.path.exists("/ci/repo/.build/plugins/berunda") or os.symlink("/ci/repo", "/ci/repo/.build/plugins/berunda")
from berunda.berunda_plugin import dependencies, wheelhouse
print(json.dumps(wheelhouse.download_command(
    [dependencies.REQUIREMENTS_FILE, dependencies.ONNX_REQUIREMENTS_FILE],
    [dependencies.CONSTRAINTS_FILE], dependencies.qgis_pins(), "cuda")))')"
KEY="$(echo "$COMMAND_JSON" | sha256sum | cut -c1-16)"
WHEELS="$CACHE/wheelhouse-$KEY"
if [ ! -f "$WHEELS/.complete" ]; then
    echo "== making the wheelhouse $WHEELS (pip download for the root's Python)"
    rm -rf "$WHEELS.partial"
    python3 - "$COMMAND_JSON" "$WHEELS.partial" <<'EOF'
import json, subprocess, sys
cmd = json.loads(sys.argv[1])
cmd[cmd.index("-d") + 1] = sys.argv[2]
cmd[0] = sys.executable
print(" ".join(cmd), flush=True)
sys.exit(subprocess.call(cmd + ["--progress-bar", "off", "-q"]))
EOF
    rm -rf "$WHEELS"
    mv "$WHEELS.partial" "$WHEELS"
    touch "$WHEELS/.complete"
fi
echo "== wheelhouse $WHEELS: $(ls "$WHEELS" | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1) ($((SECONDS - started)) s)"
$SUDO mount --bind -o ro "$WHEELS" "$WORK/wheelhouse" 2>/dev/null || $SUDO mount --bind "$WHEELS" "$WORK/wheelhouse"

set +e
in_root bash /ci/repo/.ci/current_qgis_inside.sh
code=$?
set -e
mkdir -p tests/artifacts/qgis-3.44
cp -r "$WORK/repo/tests/artifacts/." tests/artifacts/qgis-3.44/ 2>/dev/null || true
echo "== current-QGIS stage: exit $code after $((SECONDS - started)) s"
exit $code
