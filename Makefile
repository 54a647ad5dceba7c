# Two commands on a fresh machine (Debian, python3.11, node 20 + npm, make):
#   make run    set everything up and run the product against the local platform
#   make test   set everything up and run the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed
ARGS ?=
# Debian's Chromium drives the browser test of `make test` (Playwright with executable_path; no browser download).
CHROMIUM := /usr/bin/chromium

.PHONY: setup run test bench lint clean

setup: $(STAMP_PY) $(STAMP_NODE)

# Debian's python3.11 needs python3.11-venv for `-m venv`; install it when venv creation fails.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL = $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq

$(STAMP_PY): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
		$(APT_INSTALL) python3.11-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(STAMP_NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CHROMIUM):
	$(APT_INSTALL) chromium

run: setup
	$(PY) -m local.run $(ARGS)

test: setup $(CHROMIUM)
	$(PY) -m pytest $(ARGS)

bench: setup
	$(PY) -m local.bench $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) node_modules .local .pytest_cache .ruff_cache
