# Every target installs what it needs: a fresh clone runs `make demo` or `make test` directly.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= $(shell command -v python3.13 2>/dev/null || command -v python3 2>/dev/null)
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
PROMTOOL := .tools/promtool

.PHONY: install install-node install-promtool demo test lint bench bench-embedded bench-healing chaos clean

install: $(STAMP)

install-node: $(NODE_STAMP)

install-promtool: $(PROMTOOL)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' || { \
	  echo "msgstatus needs Python 3.13 (mongoeco requires it); found $$($(PYTHON) --version 2>&1) at '$(PYTHON)'." >&2; \
	  echo "Install 3.13 (e.g. 'pyenv install 3.13') or run 'make PYTHON=/path/to/python3.13'." >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The seed's Node stack (MongoDB driver, Mongoose, jsonwebtoken) for the tests that drive it.
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node 20 and npm (for tests/node)." >&2; exit 1; }
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# promtool, for the alert rules' unit tests and the metrics lint: the binary from Debian's prometheus
# package, extracted here (no daemon, nothing installed system-wide).
$(PROMTOOL):
	@command -v apt-get >/dev/null || { echo "make test needs promtool: put it at $(PROMTOOL) (apt-get is not here)." >&2; exit 1; }
	rm -rf .tools/deb && mkdir -p .tools/deb
	cd .tools/deb && apt-get download prometheus 2>&1 | grep -v "^W: Download is performed unsandboxed" || true
	dpkg -x .tools/deb/prometheus_*.deb .tools/deb/root
	cp .tools/deb/root/usr/bin/promtool $(PROMTOOL)
	rm -rf .tools/deb
	$(PROMTOOL) --version | head -1

demo: install
	$(PY) -m msgstatus demo

test: install install-node install-promtool lint
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.compare

bench-embedded: install
	$(PY) -m bench.embedded

bench-healing: install
	$(PY) -m bench.healing

chaos: install
	$(PY) -m bench.chaos

clean:
	rm -rf $(VENV) .tools $(NODE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
