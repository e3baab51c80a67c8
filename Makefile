# Berunda: `make test` and `make demo` set everything up first (idempotently).
SHELL := /bin/bash
PY := .venv/bin/python
DATA ?= $(abspath ../shared/data/dubai)
export QT_QPA_PLATFORM := offscreen

.PHONY: setup test demo bench clean

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest

demo: setup
	$(PY) scripts/demo.py --data "$(DATA)"

bench: setup
	$(PY) bench/bench_training.py
	$(PY) bench/bench_inference.py

clean:
	rm -rf .build out .pytest_cache
