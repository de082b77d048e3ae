# One command set for people and CI. Needs only Python 3.11+ and make.
SHELL := /bin/bash
PY ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
        if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
          echo $$p; break; fi; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install demo test test-fast lint format bench bench-tools clean browser prometheus system-tools

$(STAMP): pyproject.toml
	@test -n "$(PY)" || { echo "Python 3.11 or newer is required" >&2; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## generate marketplace traffic, load it, keep serving on 127.0.0.1:8765
	$(BIN)/gristmill demo

# Debian packages behind the tests that would otherwise skip (tests/conftest.py names them in
# every skip reason): Chromium for the browser tests (driven by the playwright Python package
# from the dev extra, never a downloaded browser), Prometheus and its tools for the alert rule
# and scrape tests, curl and psql for the doc walkthroughs, npm for the TypeScript SDK tests.
# Installed when CI=true; otherwise the missing ones are named and their tests skip.
SYSTEM_TOOLS := chromium:chromium promtool:prometheus prometheus:prometheus \
  amtool:prometheus-alertmanager curl:curl psql:postgresql-client npm:npm
system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// }" ]; then \
	  if [ "$$CI" = true ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not installed: $$missing(their tests will skip: apt-get install $$missing)" >&2; fi; \
	fi

browser prometheus: system-tools

# typescript and esbuild for the TypeScript SDK tests (docs/sdk-ts.md); reinstalled when the
# lock file is newer. Without npm those tests skip (and fail when CI=true).
node_modules: package-lock.json | system-tools
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --no-audit --no-fund && touch node_modules; \
	elif [ "$$CI" = true ]; then echo "npm is required (CI=true)" >&2; exit 1; \
	else echo "npm not found: the TypeScript SDK tests will skip" >&2; fi

test: $(STAMP) system-tools node_modules  ## the whole suite; service-marked tests skip without the service (fail when CI=true)
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

# wrk (Debian's package): the C load generator behind the single-event request figures
# (bench/dialects.py, bench/servers.py). Installed when missing; without root it is named
# and those figures fall back to the Python client (dialects) or are skipped (servers).
bench-tools:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null; \
	  else echo "wrk not installed (apt-get install wrk): its figures are skipped" >&2; fi; }

# BENCH_ARGS picks sections, e.g. make bench BENCH_ARGS="--only servers"
bench: $(STAMP) bench-tools  ## measured figures; results go to bench/results/ and BENCHMARKS.md
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .gristmill .gristmill-demo bench/results
