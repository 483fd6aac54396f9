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

# The Dagster UI over the demo's state (run `make demo` first), with the demo's simulator
# serving on a fixed port so partitions can be materialized from the UI.
DEV_SIMULATOR_PORT ?= 8765
dev: $(STAMP)
	@test -f .demo/fernet.key || { echo "run 'make demo' first"; exit 1; }
	$(BIN)/python -m billingo_pipeline.demo serve-simulator $(DEV_SIMULATOR_PORT) & sim=$$!; \
	trap "kill $$sim" EXIT INT TERM; \
	DAGSTER_HOME=$(CURDIR)/.demo/dagster_home \
	BILLINGO_WAREHOUSE_URL=sqlite:///$(CURDIR)/.demo/warehouse.db \
	BILLINGO_FERNET_KEY=$$(cat .demo/fernet.key) \
	BILLINGO_API_BASE_URL=http://127.0.0.1:$(DEV_SIMULATOR_PORT)/v3 \
	  $(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) .demo .artifacts
