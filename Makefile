# Entry points: `make demo`, `make test` and `make bench`. Each creates or refreshes .venv on its own.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The stamp is newer than setup.py only after a successful install of the current dependency list.
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench venv dev clean chromium

venv: $(STAMP)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

# Also writes .env (the demo's warehouse, Dagster home, Fernet key and `make dev`'s simulator URL),
# which the CLI and `dagster dev` read in this directory.
demo: $(STAMP)
	DEV_SIMULATOR_PORT=$(DEV_SIMULATOR_PORT) $(BIN)/python -m billingo_pipeline.demo

# Two pytest workers per core: a test spends about a quarter of its time waiting (on a socket, a
# process it started, a simulator delay), so one worker per core left the cores a quarter idle
# (measured on the 2-core machine: 317 s with 2 workers, 257 s with 4).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))

# Bytecode is written even where the shell sets PYTHONDONTWRITEBYTECODE (this machine's does):
# without it every worker rewrites the test modules' asserts (6 s each) and every CLI, demo and
# webserver process a test starts compiles the package again.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest

test: $(STAMP) chromium
	$(PYTEST) -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The inner loop: everything but the tests that start processes of their own (the browser, the
# webserver, CLI subprocesses, the demo, throwaway PostgreSQL clusters), marked `slow`.
test-fast: $(STAMP)
	$(PYTEST) -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

# Speed targets live here, never in the test suite (bench/run.py; figures in docs/performance.md).
# BENCH_ARGS="--quick" is a smoke run of a few minutes; without it, the full run at the sizes of docs/performance.md.
# dlt, the comparison, comes with the `bench` extra; PostgreSQL figures need the server on 127.0.0.1:5432.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# The UI test (billingo_pipeline_tests/test_ui.py) drives Debian's Chromium through Playwright, never
# a browser Playwright would download. A no-op when it is there; on a fresh machine (CI) it is
# installed when we are root with apt-get, otherwise this stops with what to run.
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the UI test (apt-get)"; \
	    { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	    { echo "error: 'apt-get install chromium' failed; the UI test needs /usr/bin/chromium" >&2; exit 1; }; \
	  else \
	    echo "error: /usr/bin/chromium is missing and cannot be installed here (needs root and apt-get)." >&2; \
	    echo "       Install it with 'sudo apt-get install chromium', or skip the UI test: make test PYTEST_ARGS='--deselect billingo_pipeline_tests/test_ui.py'" >&2; \
	    exit 1; \
	  fi; }

# The Dagster UI over the demo's state (run `make demo` first) on DEV_PORT, with the demo's simulator
# serving on a fixed port so partitions can be materialized from the UI. `dg dev` (Dagster 1.13
# deprecates `dagster dev` for it) finds the code location through pyproject.toml's [tool.dg] and
# takes the warehouse, Dagster home and Fernet key from the .env `make demo` wrote (it reads it by
# itself); a DEV_SIMULATOR_PORT other than the default must be given to `make demo` too (it is in .env).
DEV_PORT ?= 3000
DEV_SIMULATOR_PORT ?= 8765
dev: $(STAMP)
	@test -f .demo/fernet.key || { echo "run 'make demo' first"; exit 1; }
	@head -n 1 .env 2>/dev/null | grep -q '^# Written by `make demo`' || { \
	  echo "error: .env here was not written by 'make demo' (see its note): run 'make demo' first" >&2; exit 1; }
	$(BIN)/python -m billingo_pipeline.demo serve-simulator $(DEV_SIMULATOR_PORT) & sim=$$!; \
	trap "kill $$sim" EXIT INT TERM; \
	  $(BIN)/dg dev --port $(DEV_PORT)

clean:
	rm -rf $(VENV) .demo .artifacts
	@# The demo's .env points at .demo: it goes with it (a .env of your own stays).
	@if head -n 1 .env 2>/dev/null | grep -q '^# Written by `make demo`'; then rm -f .env; fi
