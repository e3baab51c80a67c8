"""Installing without internet: a *wheelhouse* is a folder of wheels made on a connected
machine with ``pip download`` for this machine's Python and platform; pip then installs from
that folder alone (``--no-index --find-links``).  Also: telling within seconds that pip
cannot reach its package index, so an air-gapped install fails fast with the way out.
No QGIS import here.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from .installer import InstallError, pip_environment, torch_index_args

WHEELHOUSE_HELP = "README, 'Installing without internet'"
PROBE_TIMEOUT_S = 10
# What pip prints when it cannot reach an index (urllib3 / requests / ssl words).
_NETWORK_WORDS = ("ProxyError", "NewConnectionError", "ConnectTimeout", "ReadTimeout",
                  "Max retries exceeded", "Could not fetch URL", "Failed to establish",
                  "Name or service not known", "Temporary failure in name resolution",
                  "Network is unreachable", "Connection refused", "SSLError",
                  "CERTIFICATE_VERIFY_FAILED")


def check_wheelhouse(folder: str) -> str:
    """The wheelhouse's absolute path; InstallError naming WHEELHOUSE when it is unusable."""
    folder = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isdir(folder):
        raise InstallError(f"WHEELHOUSE {folder} is not a folder. Give the folder of wheels made "
                           f"with pip download on a connected machine ({WHEELHOUSE_HELP}).")
    if not any(name.endswith(".whl") for name in os.listdir(folder)):
        raise InstallError(f"WHEELHOUSE {folder} holds no wheels (.whl files). Make it with the "
                           f"pip download command in {WHEELHOUSE_HELP}, for this machine's Python "
                           f"{sys.version_info[0]}.{sys.version_info[1]} and platform.")
    return folder


def wheelhouse_args(folder: str) -> List[str]:
    """pip options that install from ``folder`` alone (no index, no network)."""
    return ["--no-index", "--find-links", folder]


def target_platforms(system: str = sys.platform, machine: str = "",
                     glibc: str = "") -> List[str]:
    """pip ``--platform`` tags of wheels that install on this machine: on Linux every
    manylinux_2_N tag from this glibc down to 2.17 and its legacy name manylinux2014 (torch's
    own dependencies are tagged 2_27 or 2014, rasterio's 2_17; pip does not widen a tag)."""
    machine = (machine or platform.machine()).lower()
    if system.startswith("linux"):
        glibc = glibc or platform.libc_ver()[1] or "2.17"
        minor = int(glibc.split(".")[1]) if re.match(r"2\.\d+", glibc) else 17
        # manylinux2014 is 2_17's legacy name; wheels tagged with it alone need it spelled out.
        return ([f"manylinux_2_{n}_{machine}" for n in range(max(minor, 17), 16, -1)]
                + [f"manylinux2014_{machine}"])
    if system.startswith("win"):
        return ["win_amd64" if machine in ("amd64", "x86_64") else f"win_{machine}"]
    if system == "darwin":
        return ["macosx_11_0_arm64"] if machine == "arm64" else ["macosx_10_15_x86_64"]
    return []


def requirement_specs(files: Sequence[str]) -> List[str]:
    """The requirement lines (comments stripped) of pip requirements/constraints files."""
    specs = []
    for path in files:
        with open(path, encoding="utf-8") as handle:
            specs += [line.split("#", 1)[0].strip() for line in handle]
    return [s for s in specs if s and not s.startswith("-")]


def download_command(requirements: Sequence[str], constraints: Sequence[str],
                     pins: Dict[str, str], build: str, folder: str = "berunda-wheelhouse",
                     python_version: str = "", platforms: Sequence[str] = ()) -> List[str]:
    """What to run on a connected machine (any OS, any Python with pip) to make a wheelhouse
    for *this* machine: its Python version and platform, QGIS's own numpy (the GDAL bindings
    are not a wheel: QGIS's stay), the chosen torch build."""
    python_version = python_version or f"{sys.version_info[0]}.{sys.version_info[1]}"
    specs = requirement_specs(list(requirements) + list(constraints))
    if pins.get("numpy"):
        specs.append(f"numpy=={pins['numpy']}")
    cmd = ["python3", "-m", "pip", "download", "--only-binary=:all:", "--python-version",
           python_version]
    for tag in platforms or target_platforms():
        cmd += ["--platform", tag]
    index = next((args for args in (torch_index_args(build, r) for r in requirements) if args), [])
    return cmd + index + ["-d", folder] + specs


def index_unreachable(python: str, timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """None when pip reaches its package index; else pip's own words for why not.  Asks pip
    itself (so its configuration, proxy and certificates count) for one package's versions,
    retrying once.  A reachable index that answers "not found" counts as reachable: the
    install then reports what is missing."""
    # One retry: with none, pip prints nothing of the connection error it met.
    cmd = [python, "-m", "pip", "index", "versions", "pip", "--retries", "1", "--timeout",
           str(int(timeout)), "--no-input", "--disable-pip-version-check"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3 * timeout + 20,
                             env=pip_environment(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"pip got no answer from its package index within {3 * timeout + 20:.0f} s"
    except OSError:
        return None   # check_pip has already said what is wrong with this Python
    if out.returncode == 0:
        return None
    lines = (out.stdout + "\n" + out.stderr).splitlines()
    hits = [line.strip() for line in lines if any(word in line for word in _NETWORK_WORDS)]
    return plain_network_error(hits[-1]) if hits else None


def plain_network_error(line: str) -> str:
    """pip's urllib3 retry line in a few words: 'proxy: Connection refused'."""
    via = "proxy: " if "ProxyError" in line else ""
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", line)
    if errno:
        return via + errno.group(1).strip()
    for words, plain in (("Timeout", "timed out"), ("SSLError", "certificate or TLS error"),
                         ("CERTIFICATE_VERIFY_FAILED", "certificate not trusted")):
        if words in line:
            return via + plain
    return line.split("after connection broken by ", 1)[-1][:300]
