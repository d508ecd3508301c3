# The two commands: `make demo` and `make test`. Each sets up .venv first (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JARS := $(VENV)/jars/packages.txt

.PHONY: setup demo test test-fast lint bench mlflow-ui clean cluster-up cluster-down cluster-status dist

setup: $(STAMP) $(JARS)

# Re-installs only when pyproject.toml changes. torch is pinned first: its CPU wheel is the one
# this platform is tested with, and an unpinned torch would pull GBs of CUDA packages.
$(STAMP): pyproject.toml
	@infra/local/check_prereqs.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

# Delta Lake and hadoop-aws jars for the installed pyspark/delta-spark, from Maven Central, once
# (Spark's own resolution; see platform/musicrec/runtime/jars.py). Re-checked when the packages
# change; a no-op, offline, when the jars already match.
$(JARS): $(STAMP)
	$(BIN)/python -m musicrec.runtime.jars

demo: setup
	$(BIN)/musicrec pipeline --config conf/experiments/demo.yaml

# One process by default. TEST_WORKERS=2 runs pytest-xdist workers, a test file each at a time (module
# fixtures such as the demo's pipeline run once): faster on an idle machine, but on 2 loaded cores
# Ray's internal 5-s timeouts can fire (README, "The two commands").
TEST_WORKERS ?= 1
test: setup
	$(BIN)/python -m pytest -q $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# Unit tier only: in-process, no Spark JVM, no subprocess jobs (tiers: tests/conftest.py).
test-fast: setup
	$(BIN)/python -m pytest -q -m unit

lint: setup
	$(BIN)/ruff check platform jobs tests

bench: setup
	$(BIN)/musicrec bench generate --config conf/local.yaml
	$(BIN)/musicrec bench preprocess --config conf/local.yaml
	$(BIN)/musicrec bench evaluate --config conf/local.yaml

mlflow-ui: setup
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(CURDIR)/mlflow/mlflow.db

# The package as one zip, shipped with every Spark job to its driver and executors (--py-files; README,
# "On a cluster"). Needs no venv: the standard library zips it.
dist: dist/musicrec.zip

dist/musicrec.zip: $(shell find platform/musicrec -name '*.py')
	@mkdir -p dist
	$(PYTHON) -m zipfile -c $@ platform/musicrec

# A local multi-process cluster on 127.0.0.1 (infra/local/cluster.sh): Spark standalone, a Ray head
# with token auth, MLflow on PostgreSQL. `source .cluster/env` afterwards for the README's commands.
cluster-up: setup
	@infra/local/cluster.sh up

cluster-down:
	@infra/local/cluster.sh down

cluster-status:
	@infra/local/cluster.sh status

clean:
	rm -rf lake data mlflow reports ray_results spark-warehouse metastore_db dist
