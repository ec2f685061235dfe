# Two commands on a fresh machine: `make run` (the pipeline, end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MONTH ?= 2021-02
FROM ?= 2021-02
TO ?= 2021-04
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: install run backfill reproduce lint test test-fast test-ui test-deployment dev mlflow optuna docs bench bench-deployment up clean

$(BIN)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

run: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m ml_assets.runner $(MONTH)

backfill: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m ml_assets.runner $(FROM) --to $(TO)

# Rebuild registered model version VERSION from its recorded data and settings, and compare.
reproduce: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m ml_assets.reproduce $(VERSION)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite (what CI runs), with the 20 slowest tests and fixtures at the end.
test: install
	$(BIN)/python -m pytest --durations=20

# The loop while editing: no test marked process, slow, ui, deployment or compose (docs/testing.md).
test-fast: install
	$(BIN)/python -m pytest -m "not process and not slow and not ui and not deployment and not compose" --durations=10

test-ui: install
	$(BIN)/python -m pytest -m ui

# The production topology's tests alone (they are part of `make test` too).
test-deployment: install
	$(BIN)/python -m pytest -m deployment

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev

mlflow: install
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(DAGSTER_HOME)/ml_assets/mlflow.db

optuna: install
	$(BIN)/optuna-dashboard --host 127.0.0.1 --port 8080 sqlite:///$(DAGSTER_HOME)/ml_assets/optuna.db

# BENCH_ARGS=--long adds the 20-minute tuning study; --quick is a smoke run.
# The configuration table of docs/configuration.md, from ml_assets/settings.py.
docs: install
	$(BIN)/python -m ml_assets.settings docs/configuration.md

bench: install
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-deployment: install
	$(BIN)/python -m benchmarks.deployment

# The production topology in Docker (docs/deployment.md).
up:
	./scripts/start.sh

clean:
	rm -rf $(DAGSTER_HOME)
