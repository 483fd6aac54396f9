# Two entry points: `make demo` and `make test`. Each creates or refreshes .venv on its own.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The stamp is newer than setup.py only after a successful install of the current dependency list.
STAMP  := $(VENV)/.installed

.PHONY: demo test venv dev clean

venv: $(STAMP)

$(STAMP): setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m billingo_pipeline.demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Dagster UI over the demo's state (run `make demo` first).
dev: $(STAMP)
	DAGSTER_HOME=$(CURDIR)/.demo/dagster_home BILLINGO_WAREHOUSE_URL=sqlite:///$(CURDIR)/.demo/warehouse.db \
	  $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) .demo .artifacts
