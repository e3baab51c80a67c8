#!/usr/bin/env bash
# Runs inside the trixie root (see .ci/current_qgis.sh): QGIS 3.44's own Python, a fresh HOME,
# no PYTHONPATH, no network (proxies on a closed loopback port), the wheelhouse at /ci/wheelhouse.
set -euo pipefail
cd /ci/repo
export HOME=/ci/home LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen PATH=/usr/bin:/bin
export HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9
export https_proxy=$HTTPS_PROXY http_proxy=$HTTP_PROXY
qgis_process.bin --version 2>/dev/null | head -3
python3 -c 'import numpy, sys; print("QGIS Python", sys.version.split()[0], "numpy", numpy.__version__)'
PYTEST_OPTS=(-p no:cacheprovider -o tmp_path_retention_policy=failed)

# 1. The user path: the package folder of the profile in $HOME, filled from the wheelhouse.
started=$SECONDS
BERUNDA_TEST_HOME=$HOME BERUNDA_TEST_WHEELHOUSE=/ci/wheelhouse \
    python3 -m pytest "${PYTEST_OPTS[@]}" tests/test_desktop_install.py tests/test_qt6_readiness.py tests/test_wheelhouse.py
echo "== user path on QGIS 3.44: $((SECONDS - started)) s"

# 2. The suite's engine, command-line and Processing tests with numpy 2, against the
#    packages the user path installed.  Their interpreter (the tests' own and the engine's,
#    as .venv is on 3.22): a throw-away venv of QGIS's Python that puts that package folder
#    first, as the engine's PYTHONPATH does (the tests start `python -m berunda` and torchrun
#    with PYTHONPATH removed).
started=$SECONDS
PACKAGES="$HOME/.local/share/QGIS/QGIS3/profiles/default/python/berunda-packages"
python3 -m venv --without-pip --system-site-packages /ci/venv
SITE="$(/ci/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "import sys; sys.path[:0] = ['$PACKAGES']" > "$SITE/berunda-packages.pth"
BERUNDA_PYTHON=/ci/venv/bin/python /ci/venv/bin/python -m pytest "${PYTEST_OPTS[@]}" \
    -n 2 --dist loadgroup $(sed 's/#.*//' .ci/current_qgis_tests.txt)
echo "== engine and Processing tests on QGIS 3.44: $((SECONDS - started)) s"
