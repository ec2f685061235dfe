# Two commands on a fresh machine: `make run` (the pipeline, end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MONTH ?= 2021-02
FROM ?= 2021-02
TO ?= 2021-04
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: install install-deploy install-dev run backfill reproduce lint test test-fast test-ui test-deployment test-compose dev mlflow optuna docs bench bench-deployment bench-tests stack up clean

# Every environment is uv.lock, installed by uv (pinned with hashes in requirements-uv.txt), so no
# install resolves anything: `install` is what `make run` needs, `install-deploy` adds the production
# topology's packages (the deploy extra, for `make stack`), `install-dev` those and the test tools
# (the dev extra). uv keeps the wheels it fetched in its cache, so a second checkout installs from it.
# --compile-bytecode: installed modules come with their .pyc, which no process writes where
# PYTHONDONTWRITEBYTECODE is set (as on this project's machines): without them every process compiled
# Dagster, MLflow and XGBoost again (`import dagster` took 2.1 s of CPU, 1.1 with them; docs/testing.md).
# An install is done again when this file changes too: its recipe is here. `COMPILE=` leaves it out.
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
COMPILE ?= --compile-bytecode
SYNC := $(BIN)/uv sync --frozen --inexact $(COMPILE) --quiet

$(BIN)/uv: requirements-uv.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements-uv.txt
	touch $@

$(BIN)/.installed: pyproject.toml uv.lock $(BIN)/uv Makefile
	$(SYNC)
	touch $@

$(BIN)/.installed-deploy: pyproject.toml uv.lock $(BIN)/uv Makefile
	$(SYNC) --extra deploy
	touch $@

$(BIN)/.installed-dev: pyproject.toml uv.lock $(BIN)/uv Makefile
	$(SYNC) --extra dev
	touch $@

install: $(BIN)/.installed

install-deploy: $(BIN)/.installed-deploy

install-dev: $(BIN)/.installed-dev

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

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite (what CI runs): the Docker tests beside the rest, which run at the lowest CPU
# priority (nice 19) so that the containers come first (at equal priority two workers on two cores
# starved them until they timed out); the rest on TEST_WORKERS workers, one a core up to
# 4 (each may start a whole topology), a module to a worker (pytest-xdist). The compose tests' output
# follows the others'; each part ends with its slowest tests. Both run; the target fails if either
# does. bash, for a process group of the compose tests' own (set -m) that Ctrl-C reaches by the trap.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))
test: SHELL := /bin/bash
test: install-dev
	status=0; log=$$(mktemp); \
	set -m; $(BIN)/python -m pytest -m compose --durations=5 >"$$log" 2>&1 & compose=$$!; set +m; \
	trap 'kill -INT $$compose 2>/dev/null' INT TERM; \
	nice -n 19 $(BIN)/python -m pytest -m "not compose" -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=20 || status=1; \
	wait $$compose || status=1; \
	echo "=== the compose tests (pytest -m compose), run beside the others ==="; cat "$$log"; rm -f "$$log"; \
	exit $$status

# The loop while editing: no test marked process, slow, ui, deployment or compose, on the same workers
# as `make test` (docs/testing.md: one process leaves all cores but one idle).
test-fast: install-dev
	$(BIN)/python -m pytest -m "not process and not slow and not ui and not deployment and not compose" -n $(TEST_WORKERS) --dist loadscope --durations=10

test-ui: install-dev
	$(BIN)/python -m pytest -m ui

# The production topology's tests alone (they are part of `make test` too).
test-deployment: install-dev
	$(BIN)/python -m pytest -m deployment

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev

mlflow: install
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(DAGSTER_HOME)/ml_assets/mlflow.db

optuna: install
	$(BIN)/optuna-dashboard --host 127.0.0.1 --port 8080 sqlite:///$(DAGSTER_HOME)/ml_assets/optuna.db

# The configuration table of docs/configuration.md, from ml_assets/settings.py.
docs: install
	$(BIN)/python -m ml_assets.settings docs/configuration.md

# BENCH_ARGS=--long adds the 20-minute tuning study; --quick is a smoke run.
bench: install-dev
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-deployment: install-dev
	$(BIN)/python -m benchmarks.deployment

# `make test` under the CPU sampler: its wall time and CPU-seconds by test module, into docs/testing.md.
bench-tests: install-dev
	$(BIN)/python -m benchmarks.cpu_by_process --by-module --report docs/testing.md $(MAKE) test

# The production topology in Docker, started by scripts/start.sh with stand-ins for images no registry
# serves here (needs a Docker engine; part of `make test` where one answers).
test-compose: install-dev
	$(BIN)/python -m pytest -m compose

# The production topology without Docker (docs/deployment.md#without-containers): PostgreSQL behind
# PgBouncer, the MLflow server, code server, webserver and daemon on 127.0.0.1, with their files in a
# new folder, until Ctrl-C. Needs Debian's postgresql and pgbouncer; STACK_ARGS="--workers 2" adds
# Celery workers and a redis-server.
STACK ?= .stack/$(shell date +%Y%m%d-%H%M%S)
stack: install-deploy
	$(BIN)/python -m ml_assets.deploy.local $(STACK) $(STACK_ARGS)

# The production topology in Docker (docs/deployment.md).
up:
	./scripts/start.sh

clean:
	rm -rf $(DAGSTER_HOME)
