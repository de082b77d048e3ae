# One command set for people and CI. Needs only Python 3.11+ and make.
SHELL := /bin/bash
PY ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
        if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
          echo $$p; break; fi; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install demo test test-fast lint format bench clean browser prometheus

$(STAMP): pyproject.toml
	@test -n "$(PY)" || { echo "Python 3.11 or newer is required" >&2; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## generate marketplace traffic, load it, keep serving on 127.0.0.1:8765
	$(BIN)/gristmill demo

# typescript and esbuild for the TypeScript SDK tests (docs/sdk-ts.md); reinstalled when the
# lock file is newer. Without npm those tests skip (and fail when CI=true).
node_modules: package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --no-audit --no-fund && touch node_modules; \
	elif [ "$$CI" = true ]; then echo "npm is required (CI=true)" >&2; exit 1; \
	else echo "npm not found: the TypeScript SDK tests will skip" >&2; fi

# Debian's chromium for the browser tests (never a downloaded browser); installed when CI=true.
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$CI" = true ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: the browser tests will skip (apt-get install chromium)" >&2; fi; \
	fi

# Debian's prometheus (prometheus, promtool) and prometheus-alertmanager (amtool) for the alert
# rule tests and the real scrape test (deploy/prometheus); installed when CI=true.
prometheus:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then \
	  if [ "$$CI" = true ]; then apt-get update -qq && apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null; \
	  else echo "promtool/amtool not found: the Prometheus tests will skip (apt-get install prometheus prometheus-alertmanager)" >&2; fi; \
	fi

test: $(STAMP) node_modules browser prometheus  ## the whole suite; service-marked tests skip without the service (fail when CI=true)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)  ## measured figures; results go to bench/results/ and BENCHMARKS.md
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .gristmill .gristmill-demo bench/results
