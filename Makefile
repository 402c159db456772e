# Thin wrappers: every target calls a Python entry point or a script; the logic lives there.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv: use the one on PATH, else a private copy installed by `make setup` into .tools/.
UV := $(shell uv --version >/dev/null 2>&1 && echo uv || echo $(CURDIR)/.tools/bin/uv)
# Never download a Python when one is installed (pyenv machines); uv still can where none is.
export UV_PYTHON_PREFERENCE ?= system
# These machines set PYTHONDONTWRITEBYTECODE=1, which makes every Megatron process recompile
# ~3,500 modules (~25 s). An empty value re-enables the bytecode cache.
export PYTHONDONTWRITEBYTECODE :=
export OMP_NUM_THREADS ?= 1
RUNPY := $(UV) run --locked python

.PHONY: help setup test test-fast lint data
help:
	@echo "make setup | test | lint | data | pretrain SIZE=… REG=…   (see README.md)"

$(CURDIR)/.tools/bin/uv:
	python3 -m pip install -q --target $(CURDIR)/.tools uv

setup: $(if $(filter uv,$(UV)),,$(CURDIR)/.tools/bin/uv)
	$(UV) sync --locked

test: setup
	$(UV) run --locked pytest -q

test-fast: setup
	$(UV) run --locked pytest -q -m "not slow"

lint: setup
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
