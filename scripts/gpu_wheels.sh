#!/usr/bin/env bash
# Wheels bench/gpu_check.py needs on the GPU machine (which has torch, numpy, timm,
# huggingface-hub, safetensors, tqdm but not these), for its Python 3.12, into .whl/
# (git-ignored). Then run there:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    segmentation-models-pytorch==0.5.0 rasterio==1.4.3 affine==2.4.0 cligj==0.7.2 \
    click-plugins==1.1.1.2
ls -la .whl
