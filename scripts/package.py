#!/usr/bin/env python3
"""Build dist/berunda-<version>.zip: the plugin as QGIS installs it ("Install from ZIP"),
one top-level folder ``berunda/`` holding only the plugin's own files."""
from __future__ import annotations

import argparse
import configparser
import os
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN_NAME = "berunda"
# What the plugin is made of; everything else (tests, bench, scripts, .venv, .build, .git,
# caches) stays out.
INCLUDE = ["metadata.txt", "__init__.py", "__main__.py", "berunda_plugin", "algorithms", "cli", "engine", "models",
           "resources", "requirements", "README.md", "LICENSE", "LICENSE.txt", "CHANGELOG.md"]
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".ipynb_checkpoints"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".orig", ".rej", ".swp", "~")
SKIP_FILES = {".DS_Store", "Thumbs.db", "dev.txt"}   # requirements/dev.txt: test tooling only


def version(repo: Path = REPO) -> str:
    meta = configparser.ConfigParser()
    meta.read(repo / "metadata.txt", encoding="utf-8")
    return meta["general"]["version"].strip()


def plugin_files(repo: Path = REPO):
    """(path on disk, path inside the zip) of every file that goes in, sorted."""
    for name in INCLUDE:
        path = repo / name
        if path.is_file():
            yield path, f"{PLUGIN_NAME}/{name}"
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
                for file in sorted(files):
                    if file in SKIP_FILES or file.endswith(SKIP_SUFFIXES) or file.startswith("."):
                        continue
                    full = Path(root) / file
                    yield full, f"{PLUGIN_NAME}/{full.relative_to(repo).as_posix()}"


def build(out_dir: Path, repo: Path = REPO) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{PLUGIN_NAME}-{version(repo)}.zip"
    tmp = target.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, arcname in plugin_files(repo):
            archive.write(path, arcname)
    os.replace(tmp, target)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(REPO / "dist"), help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    target = build(Path(args.out))
    with zipfile.ZipFile(target) as archive:
        count = len(archive.namelist())
    print(f"{target} ({count} files, {target.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
