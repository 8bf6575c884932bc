# boshd: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= conf/boshd.toml
# prometheus: for its promtool (tests/protocol/test_metrics.py); Debian's package also enables a
# Prometheus server on :9090 (`systemctl disable --now prometheus` if you do not want it).
APT_PACKAGES := prosody nginx systemd openssl chromium fonts-liberation prometheus
BROWSER_DIR := tests/e2e/browser
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test check fmt venv deps system-deps browser-deps demo bench clean

## venv: create .venv and install boshd with its test tools (re-run when pyproject.toml changes)
venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

## system-deps: Debian packages the tests run for real (Prosody, nginx, Chromium, systemd tools, promtool); only if missing
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## browser-deps: strophe.js and converse.js for the browser tests and the demo (exact, from package-lock.json)
browser-deps: $(BROWSER_DIR)/node_modules/.package-lock.json
$(BROWSER_DIR)/node_modules/.package-lock.json: $(BROWSER_DIR)/package.json $(BROWSER_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm (node >= 18) is needed for the browser tests"; exit 1; }
	npm ci --prefix $(BROWSER_DIR) --no-audit --no-fund

deps: venv system-deps browser-deps

## demo: chat with an echo bot in your browser through boshd (BOSH or WebSocket); Ctrl-C stops it
demo: venv system-deps browser-deps
	$(PY) demo/run.py

## bench: boshd vs Prosody's own BOSH/WebSocket: chat, logins, idle (~7 min; BENCH_ARGS=--quick ~70 s)
bench: deps
	$(PY) -m bench.run $(BENCH_ARGS)

## run: start boshd in the foreground with the default config
run: venv
	$(VENV)/bin/boshd run --config $(CONFIG)

## check: formatting, lint and strict typing
check: venv
	$(VENV)/bin/ruff format --check boshd tests bench demo
	$(VENV)/bin/ruff check boshd tests bench demo
	$(VENV)/bin/mypy boshd

fmt: venv
	$(VENV)/bin/ruff format boshd tests bench demo
	$(VENV)/bin/ruff check --fix boshd tests bench demo

## test: install everything, run the static checks and the whole suite (unit, protocol, e2e)
test: deps check
	$(PY) -m pytest tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info $(BROWSER_DIR)/node_modules test-artifacts
