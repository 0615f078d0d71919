# trainlab: `make train` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# extra arguments: make train ARGS="model=mlp trainer.max_epochs=3"; make test PYTEST_ARGS="-k resume"
ARGS ?=
PYTEST_ARGS ?=

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "trainlab needs Python >= 3.10"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing trainlab and its dependencies into $(VENV) (first time: a few minutes)..."
	$(PY) -m pip install --quiet -e ".[dev,launchers,search]" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	touch $(INSTALLED)

install: $(INSTALLED)  ## create .venv and install trainlab (editable) with the dev, launcher and search extras

train: install  ## train the default study (small CNN on the embedded MNIST digits, W&B offline)
	$(PY) -m trainlab.train $(ARGS)

test: install  ## run the test suite, without the tests marked slow (a few minutes on 2 cores)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: install  ## only the tests marked slow (whole studies, multiruns, subprocesses, signals)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: install  ## every test, slow ones included (what CI runs, in two steps)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install  ## ruff lint and format check, and the packages' layers (import-linter, pyproject.toml)
	$(VENV)/bin/ruff check src tests scripts examples
	$(VENV)/bin/ruff format --check src tests scripts examples
	$(VENV)/bin/lint-imports

format: install  ## ruff autofix and format
	$(VENV)/bin/ruff check --fix src tests scripts examples
	$(VENV)/bin/ruff format src tests scripts examples

clean-logs:  ## delete every run directory under logs/
	rm -rf logs/

clean: clean-logs  ## delete logs and the virtual environment
	rm -rf $(VENV) .pytest_cache .ruff_cache

.PHONY: help install train test test-slow test-all lint format clean-logs clean
