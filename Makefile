# helios-orchestrator — `make run` (sandbox + daemon) and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-install
PYTEST_ARGS ?=

.PHONY: all venv postgres testtools run test test-unit lint bench sandbox-up sandbox-down sandbox-status clean

all: test

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# PostgreSQL server binaries: installed through apt-get on Debian when run as root; otherwise the
# script explains what to install.
postgres:
	@bash deploy/scripts/install-postgres-debian.sh

# The main job: a three-region PostgreSQL sandbox and the daemon watching it. Ctrl-C stops both.
run: venv postgres
	$(BIN)/orchestrator sandbox run

sandbox-up: venv postgres
	$(BIN)/orchestrator sandbox up

sandbox-down: venv
	$(BIN)/orchestrator sandbox down

sandbox-status: venv
	$(BIN)/orchestrator sandbox status

# Tools the tests need besides Python packages (headless Chromium for the HTML report test,
# promtool for the Prometheus alert rules): installed through apt-get on Debian when run as root
# (never leaving a Prometheus server running); otherwise the script explains.
testtools:
	@bash deploy/scripts/install-test-tools.sh

test: venv postgres testtools
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest -m "not sandbox and not browser and not etcd and not netns" $(PYTEST_ARGS)

# Benchmarks on throw-away sandboxes (~15 min): steady state, detection, lag, failover (async
# and sync), switchover, DR drills, leader election and fencing; rewrites BENCHMARKS.md.
# `--only NAME,...` (then only those sections are replaced) and `--runs N` select parts.
bench: venv postgres
	$(BIN)/python -m tests.bench.run_bench --write BENCHMARKS.md

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
