# Every target installs what it needs: a fresh clone runs `make demo` or `make test` directly.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTHON ?= $(shell command -v python3.13 2>/dev/null || command -v python3 2>/dev/null)
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
PROMTOOL := .tools/promtool
# Exact versions the tests passed with: the image installs LOCK, make install DEV_LOCK (LOCK's pins and
# the test tools). `make lock` refreshes both to the newest releases that pyproject.toml allows.
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock
UV       := .tools/uv/bin/uv

.PHONY: lock install install-node install-promtool demo test lint bench bench-embedded bench-healing chaos orphans conformance serializer clean

install: $(STAMP)

install-node: $(NODE_STAMP)

install-promtool: $(PROMTOOL)

$(STAMP): pyproject.toml $(DEV_LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' || { \
	  echo "msgstatus needs Python 3.13 (mongoeco requires it); found $$($(PYTHON) --version 2>&1) at '$(PYTHON)'." >&2; \
	  echo "Install 3.13 (e.g. 'pyenv install 3.13') or run 'make PYTHON=/path/to/python3.13'." >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(DEV_LOCK)
	$(PY) -m pip install --quiet --no-deps -e '.[dev]'
	$(PY) -m pip check
	touch $(STAMP)

# uv resolves for Linux and Python 3.13 whatever this machine is; it is used for nothing else.
lock:
	test -x $(UV) || { $(PYTHON) -m venv .tools/uv && .tools/uv/bin/pip install --quiet uv; }
	$(UV) pip compile --quiet --upgrade --python-version 3.13 --python-platform linux \
	  --custom-compile-command 'make lock' pyproject.toml -o $(LOCK)
	$(UV) pip compile --quiet --upgrade --python-version 3.13 --python-platform linux \
	  --custom-compile-command 'make lock' --extra dev --constraint $(LOCK) pyproject.toml -o $(DEV_LOCK)
	@echo "Locked. Run 'make test' before committing $(LOCK) and $(DEV_LOCK)."

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

# Independent tests side by side on two processes, then those that hold time or CPU to a bound, alone.
test: install install-node install-promtool lint
	$(PY) -m pytest -n 2 -m "not serial"
	$(PY) -m pytest -m serial

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

# MongoDB's unified spec tests (pymongo's runner) against the embedded server (bench/conformance-results.md).
conformance: install
	$(PY) -m bench.conformance

# A sweep's duration and a new message's latency with 10,000 messages whose log never came (bench/orphans-results.md).
orphans: install
	$(PY) -m bench.orphans

# RQ's JSON serializer against rq-scheduler and rq-dashboard as used here (bench/serializer-results.md).
serializer: install
	$(PY) -m bench.serializer

clean:
	rm -rf $(VENV) .tools $(NODE_DIR)/node_modules .pytest_cache .mypy_cache .ruff_cache
