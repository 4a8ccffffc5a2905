# StreamFlow: `make up` brings the platform up on embedded defaults, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

.PHONY: install wheel up down status test test-unit test-integration lint fetch-kafka bench chaos soak clean

# uv resolves and installs this dependency set in seconds (pip's resolver backtracks for
# minutes); requirements.lock pins every package by hash for reproducible installs.
# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on this machine) nothing else
# writes .pyc files, and every process (each Dagster run, CLI command, worker) compiled
# Dagster from source again: ~2 s of CPU per Dagster run (py-spy, `make bench` catch-up).
$(STAMP): pyproject.toml requirements.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(BIN)/python || uv venv --quiet --python $(PYTHON) $(VENV)
	uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	uv pip install --quiet --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

# The dbt manifest the Dagster definitions load: parsed again only when the project changed.
install: $(STAMP)
	@$(BIN)/streamflow dbt prepare

# A wheel in dist/ that ships the dbt project and its manifest (setup.py).
wheel: install
	uv build --wheel --out-dir dist

# System programs: Java and Maven for the embedded Kafka, Debian's Chromium for the browser
# tests. Installed with apt-get when missing and run as root; otherwise the script prints the
# one command to run. Nothing but a PATH look-up when they are there.
SYSTEM_PACKAGES := scripts/system-packages

fetch-kafka: install
	@$(SYSTEM_PACKAGES) java mvn
	$(BIN)/streamflow kafka fetch

up: fetch-kafka
	$(BIN)/streamflow up

down: install
	$(BIN)/streamflow down

status: install
	$(BIN)/streamflow status

# Unit, integration and browser tests; the fixtures start their own Kafka and PostgreSQL.
test: install
	@$(SYSTEM_PACKAGES) java mvn chromium
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: install
	@$(SYSTEM_PACKAGES) java mvn
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# Benchmarks (not tests): results in benchmarks/results/<timestamp>-*.json. QUICK=1 for CI size.
bench: fetch-kafka
	$(BIN)/python -m benchmarks.run $(if $(QUICK),--quick,)

# Fault injection: 1M events, 5 sink SIGKILLs, a PostgreSQL and a broker restart, an oversized
# message, offsets deleted under the stopped sink, then the topic deleted and created again;
# every offset of both incarnations accounted for. CLUSTER=1: three brokers and three sinks,
# a leader SIGKILLed, a sink killed and one frozen past its session timeout, a rolling restart,
# a reassignment, then the micro-batch's invariants. Results in benchmarks/results/ and
# docs/RELIABILITY.md.
chaos: fetch-kafka
	$(BIN)/python -m benchmarks.chaos $(if $(QUICK),--quick,) $(if $(CLUSTER),--cluster,)

# The whole local stack at 2,000 events/s for 30 minutes (QUICK=1: 4): RSS, disk, lag and
# micro-batch timings must stay flat. Results in benchmarks/results/ and docs/BENCHMARKS.md.
# LIFECYCLE=1: 60 minutes with 5 m partitions kept 15 m (QUICK=1: 12 minutes, kept 5 m):
# PostgreSQL and Dagster storage flat, the archive per event, every event accounted for.
soak: fetch-kafka
	$(BIN)/python -m benchmarks.soak $(if $(QUICK),--quick,) $(if $(LIFECYCLE),--lifecycle,)

lint: install
	$(BIN)/ruff check .

lock:
	uv pip compile pyproject.toml --group dev --generate-hashes --python-version 3.11 -q -o requirements.lock

clean:
	rm -rf $(VENV) dbt_project/target
