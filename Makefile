# Berunda: `make test` and `make demo` set everything up first (idempotently).
SHELL := /bin/bash
PY := .venv/bin/python
DATA ?= $(abspath ../shared/data/dubai)
export QT_QPA_PLATFORM := offscreen

.PHONY: setup test test-current-qgis demo bench clean package model

setup:
	bash scripts/setup.sh

test: setup
	$(PY) -m pytest -n 2 --dist loadgroup

# QGIS 3.44 (numpy 2) in a cached Debian trixie root: a new user's offline install and path,
# then the engine's tests there (.ci/current_qgis.sh; needs root or sudo).
test-current-qgis:
	bash .ci/current_qgis.sh

demo: setup
	$(PY) scripts/demo.py --data "$(DATA)"

bench: setup
	$(PY) bench/bench_training.py
	$(PY) bench/bench_inference.py

# dist/berunda-<version>.zip, ready for Plugins > Install from ZIP (no set-up needed).
package:
	python3 scripts/package.py

# Regenerate resources/models/berunda_train_classify_evaluate.model3 (the modeler example).
model:
	$(PY) scripts/make_model.py

clean:
	rm -rf .build out .pytest_cache
