# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: demo test check bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "coyote_mw needs Python 3.11 or newer")'
	@$(PYTHON) -m venv $(VENV) || { echo "python venv is missing: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[starlette,server]'
	@touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,servers]'
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
	@touch $@

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@command -v wrk >/dev/null && command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk nginx-light; }
	@touch $@

## make demo: the Deadwood Saloon behind a Starlette host on 127.0.0.1:$(PORT)
demo: $(VENV)/.demo-installed
	$(BIN)/python -m sample_apps.demo --host 127.0.0.1 --port $(PORT)

## make check: lint and types
check: $(VENV)/.test-installed
	$(BIN)/ruff check coyote_mw adapters sample_apps tests benchmarks
	$(BIN)/mypy

## make test: lint, types, then the whole test suite (pytest's summary comes last);
## the tests start their own redis-server on a free 127.0.0.1 port
test: check
	$(BIN)/python -m pytest

## make bench: every benchmark (figures for the README)
bench: $(VENV)/.bench-installed
	$(BIN)/python benchmarks/router_lookup.py
	$(BIN)/python benchmarks/inprocess.py
	$(BIN)/python benchmarks/wsgi.py
	$(BIN)/python benchmarks/proxy.py
	$(BIN)/python benchmarks/propagation.py
	$(BIN)/python benchmarks/workers.py
	$(BIN)/python benchmarks/operator_views.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
