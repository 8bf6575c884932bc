# boshd: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# .stamp: boshd with its test tools (`make test`); .stamp-run: boshd with its runtime
# dependencies (`make run`), which a test install includes.
TEST_STAMP := $(VENV)/.stamp
RUN_STAMP := $(VENV)/.stamp-run
CONFIG ?= conf/boshd.toml
DIST := dist
# python3-venv: `make deb` builds /opt/boshd with Debian's python3; util-linux, iproute2: the
# package test's private mount and network namespaces (unshare, setpriv, ip). prometheus: for
# its promtool (tests/protocol/test_metrics.py); Debian's package also enables a Prometheus
# server on :9090 (`systemctl disable --now prometheus` if you do not want it).
APT_PACKAGES := prosody nginx systemd openssl chromium fonts-liberation python3-venv util-linux iproute2 prometheus
BROWSER_DIR := tests/e2e/browser
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VERSION = $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
DEB = $(DIST)/boshd_$(VERSION)_$(shell dpkg --print-architecture 2>/dev/null).deb
DEB_INPUTS = pyproject.toml README.md $(shell find boshd schemas conf systemd docs packaging \
	-name __pycache__ -prune -o -type f -print)

.PHONY: run test check fmt venv deps system-deps browser-deps demo bench deb wheel clean

## venv: create .venv and install boshd with its test tools (re-run when pyproject.toml changes)
venv: $(TEST_STAMP)
$(TEST_STAMP): pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(RUN_STAMP)

# boshd and its runtime dependencies only. Nothing to do (and no network) while either stamp
# is newer than pyproject.toml.
$(RUN_STAMP): pyproject.toml
	@if [ $(TEST_STAMP) -nt pyproject.toml ]; then touch $@; else \
	  set -ex; [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install --quiet -e .; touch $@; fi

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

## run: start boshd in the foreground with conf/boshd.toml (installs only what boshd needs to run)
run: $(RUN_STAMP)
	$(VENV)/bin/boshd run --config $(CONFIG)

## deb: the Debian package, dist/boshd_<version>_<arch>.deb (rebuilt when a source changes)
deb: $(DEB)
$(DEB): $(DEB_INPUTS)
	packaging/deb/build.sh $@

## wheel: dist/boshd-<version>-py3-none-any.whl (schemas inside) for pip or pipx elsewhere
wheel: $(RUN_STAMP)
	rm -rf build
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir $(DIST) .

## check: formatting, lint, strict typing and the import layers (docs/architecture.md)
check: venv
	$(VENV)/bin/ruff format --check boshd tests bench demo
	$(VENV)/bin/ruff check boshd tests bench demo
	$(VENV)/bin/mypy boshd
	$(PY) -m pytest -q tests/unit/test_layers.py

fmt: venv
	$(VENV)/bin/ruff format boshd tests bench demo
	$(VENV)/bin/ruff check --fix boshd tests bench demo

## test: install everything, run the static checks and the whole suite (unit, protocol, e2e)
test: deps check
	$(PY) -m pytest tests

clean:
	rm -rf $(VENV) $(DIST) build .pytest_cache .mypy_cache .ruff_cache *.egg-info $(BROWSER_DIR)/node_modules test-artifacts
