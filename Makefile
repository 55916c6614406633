# `make demo` and `make test` each set up their own environment on a fresh machine.
# The environment lives outside the clone, keyed by a hash of pyproject.toml, so repeated fresh
# clones (CI) reuse one environment instead of piling up multi-GB copies; stale ones are removed.
PYTHON ?= python3
EXTRAS ?= cpu,dev
CACHE_DIR ?= $(HOME)/.cache/domainvlm
# Only the dependency lists key the environment: editing entry points or tool settings reuses it.
DEPS_HASH := $(shell sed -n '/^dependencies/,/^\[project.scripts\]/p' pyproject.toml | sha1sum | cut -c1-12)
VENV ?= $(CACHE_DIR)/venv-$(DEPS_HASH)
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.PHONY: env test test-all lint format demo bench clean-env

$(VENV)/.installed:
	@mkdir -p $(CACHE_DIR)
	@find $(CACHE_DIR) -maxdepth 1 -name 'venv-*' ! -path '$(VENV)' -exec rm -rf {} +
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# Re-point the shared environment's editable install at this clone (seconds, no downloads).
env: $(VENV)/.installed
	@$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .

test: env
	$(PY) -m pytest -q -m "not slow" tests

test-all: env
	$(PY) -m pytest -q tests

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: env
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: env
	$(PY) -m core.demo

bench: env
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/kb_bench.py --n 100000 --dim 512

clean-env:
	rm -rf $(VENV)
