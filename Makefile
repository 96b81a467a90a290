# One entry point for people and CI. `make test` and `make demo` install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The benchmarks' own venvs: the peers and matplotlib are no project dependencies.
BENCH_VENV     ?= .venv-bench
BENCH_ARQ_VENV ?= .venv-bench-arq
BENCH_STAMP    := $(BENCH_VENV)/.installed-stamp

.PHONY: install test e2e chaos-long demo bench bench-env bench-ours bench-peers bench-report lint fmt typecheck check clean

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "swarmbus needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## set up .venv (idempotent)

test: install  ## the whole test suite, on a real Redis (REDIS_URL, Docker, or redis-server)
	$(BIN)/pytest

# Starts an engine when none answers (and stand-in images when no registry does): see
# deploy/tools/docker-engine.sh. Budget: ~15 min with cold image builds, ~4 with cached ones.
e2e: install  ## the compose stack on a real Docker engine: build, scale to 10, faults, down -v
	@images="$$(bash deploy/tools/docker-engine.sh up $(BIN)/python)" && eval "$$images" && \
	  $(BIN)/pytest -m e2e -s tests/e2e

chaos-long: install  ## the load and Redis-outage tests, figures saved for docs/benchmarks.md
	CHAOS_RESULTS=1 $(BIN)/pytest -m "long or chaos" -s tests/chaos/test_load.py \
	  tests/chaos/test_redis_outage.py

demo: install  ## the whole swarm on this machine (simulated vendors unless keys are set)
	$(BIN)/swarm demo

$(BENCH_STAMP): bench/requirements-bench.txt bench/peers/requirements-arq.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r bench/requirements-bench.txt
	test -x $(BENCH_ARQ_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_ARQ_VENV)
	$(BENCH_ARQ_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_ARQ_VENV)/bin/python -m pip install --quiet -r bench/peers/requirements-arq.txt
	@touch $(BENCH_STAMP)

bench-env: $(BENCH_STAMP)  ## the peers' venvs (.venv-bench, .venv-bench-arq), apart from .venv

bench: install bench-env  ## every benchmark, one after another, then docs/benchmarks.md
	$(MAKE) bench-ours
	$(MAKE) bench-peers
	$(MAKE) bench-report

bench-ours: install  ## the project's own benchmarks; each prints a table, one JSON line last
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/vendors.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/dispatcher.py
	$(BIN)/python bench/dispatcher_redis.py
	$(BIN)/python bench/megashard.py
	$(BIN)/python bench/swarm.py
	$(BIN)/python bench/cpu_profile.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/urgency.py
	$(BIN)/python bench/tracing.py

bench-peers: install bench-env  ## swarmbus against taskiq, arq, FastStream, Celery, a raw redis-py loop; LiteLLM stacks
	$(BENCH_VENV)/bin/python bench/peers/run.py --project-python $(BIN)/python \
		--bench-python $(BENCH_VENV)/bin/python --arq-python $(BENCH_ARQ_VENV)/bin/python
	$(BIN)/python bench/llmstack.py --bench-python $(BENCH_VENV)/bin/python

bench-report: bench-env  ## docs/benchmarks.md and docs/img/ from bench/results/*.json
	$(BENCH_VENV)/bin/python bench/report.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(BENCH_ARQ_VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
