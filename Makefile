# Two commands set up a fresh machine: `make run` and `make test` (see README).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HF_HUB_OFFLINE := 1

.PHONY: run test test-fast install install-dev lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/dupq serve --host $(HOST) --port $(PORT)

lint: install-dev
	$(BIN)/ruff check .

# The whole suite, as CI runs it (.ci/run): unit, integration and system tests (browser, cluster, crash, fuzzing).
test: install-dev lint
	$(BIN)/python -m pytest -q --durations=25

# The loop a developer runs all day: everything that needs no training run, no browser and no multi-process
# cluster (tests marked system or training are deselected; docs/development.md).
test-fast: install-dev lint
	$(BIN)/python -m pytest -q -m "not system and not training"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
