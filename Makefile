# edgebus: two commands to start (see README).
#   make demo   create .venv, install, run the demo on the embedded broker
#   make test   create .venv, install with test tools, run every check and test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PYTEST_ARGS ?=
# make test runs test files in this many worker processes (most tests wait on sockets and processes).
PYTEST_WORKERS ?= 2

.PHONY: demo test test-slow check lint typecheck imports bench clean help

help:
	@echo "make demo       run the live demo (embedded broker + simulated agents); Ctrl-C stops"
	@echo "make test       lint, type-check, import layers and the test suite (not the slow chaos runs)"
	@echo "make test-slow  the slow chaos and soak tests"
	@echo "make bench      run every benchmark and write bench/REPORT.md (BENCH_ARGS=--quick: short runs)"
	@echo "make clean      remove .venv and caches"

$(VENV)/.created:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "edgebus needs Python 3.11 or newer; found " + sys.version.split()[0])'
	@$(PYTHON) -m venv $(VENV) || { echo "could not create a virtual environment: on Debian/Ubuntu run 'sudo apt-get install python3-venv'"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	@touch $@

$(VENV)/.installed-demo: $(VENV)/.created pyproject.toml
	$(PY) -m pip install --quiet -e '.[coordinator]'
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.created pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/edge-coordinator start --demo

check: lint typecheck imports

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check schemas protocols broker agents coordinator firmware_tools bench tests

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy schemas protocols broker agents coordinator firmware_tools

imports: $(VENV)/.installed-dev
	$(BIN)/lint-imports

test: check
	$(BIN)/pytest -m "not slow" -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: $(VENV)/.installed-dev
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

# Every bench in bench/, one after the other; the figures, baselines and verdicts go to bench/REPORT.md.
bench: $(VENV)/.installed-dev
	$(PY) bench/report.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
