# Needs only python3 (>= 3.11), pip and make. Everything else goes into .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := PYTHONWARNINGS=ignore $(BIN)/python -m pip --disable-pip-version-check -q
# Source checked by mypy (tests are checked by pytest itself).
MYPY_PATHS := fleet workflows activities starters lab worker.py

.DEFAULT_GOAL := help
.PHONY: help install install-test demo up test lint typecheck pytest clean

help:
	@echo "make demo    start the local stack, onboard the lab fleet, run a sample rollout"
	@echo "make up      start the local stack (Temporal dev server, lab, worker) until Ctrl-C"
	@echo "make test    lint, type-check and run the whole test suite (what CI runs)"
	@echo "make clean   remove .venv and local state (.state)"

# Stamp files make installs idempotent: they rerun only when pyproject.toml changes.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
		"Flotilla needs Python 3.11 or newer; set PYTHON=python3.11 (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "installing Flotilla into $(VENV) (quiet; first time takes a minute)"
	@$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "installing Flotilla with test tools into $(VENV)"
	@$(PIP) install -e '.[test]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/flotilla demo

up: install
	$(BIN)/flotilla up

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-test
	$(BIN)/mypy $(MYPY_PATHS)

pytest: install-test
	$(BIN)/pytest -q --durations=25

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache *.egg-info
