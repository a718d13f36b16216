# `make study` and `make test` work on a fresh clone: the first target that needs the
# virtual environment creates it and installs the package into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPEC ?= article
STORAGE ?= sqlite:///storage/study.db
ARGS ?=
Q ?= grid

.PHONY: study report dashboard query setup test lint unit bench clean

study: $(STAMP)
	$(BIN)/study run --spec $(SPEC) --storage $(STORAGE) $(ARGS)
	$(BIN)/study report --spec $(SPEC) --storage $(STORAGE)

# The results: dashboards/ again, optuna-dashboard on 127.0.0.1:8080, a read-only query.
report: $(STAMP)
	$(BIN)/study report --storage $(STORAGE) $(ARGS)

dashboard: $(STAMP)
	$(BIN)/study dashboard --storage $(STORAGE) $(ARGS)

query: $(STAMP)
	$(BIN)/study query $(Q) --storage $(STORAGE) $(ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check study tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# Two test processes at once (pytest-xdist): most tests wait on `study` processes they
# start (TensorFlow's import, XLA compiles, signals, timeouts), so two overlap well on 2
# cores. A file's tests run one after another in one process (--dist loadfile): two of
# test_workers.py's pools at once would run up to ten TensorFlow processes on 2 cores, and
# a worker starved between heartbeats past run.grace_seconds is taken for a dead one.
# Files start in the order tests/conftest.py puts them (the longest first).
# TEST_JOBS=0 runs every test in this process.
TEST_JOBS ?= 2

unit: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder --durations=25

test: lint unit

# The population trainer against the article's own loop (bench/article_loop.py), the keras
# reference and the machine's matmul peak, from one run of real `study run`s up to 10,000
# trials (20-25 min on 2 quiet cores, measured 2026-12-07; ARGS=--quick is
# a short smoke, ARGS=--keras-100 adds keras on 100 trials, ~10 min more); rewrites
# BENCHMARKS.md's tables.
bench: $(STAMP)
	$(BIN)/python bench/bench.py --write BENCHMARKS.md $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
