# One entry point for people and CI. `make test` and `make demo` install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test demo bench lint fmt typecheck check clean

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "swarmbus needs Python 3.11+"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## set up .venv (idempotent)

test: install  ## the whole test suite, on a real Redis (REDIS_URL, Docker, or redis-server)
	$(BIN)/pytest

demo: install  ## the whole swarm on this machine (simulated vendors unless keys are set)
	$(BIN)/swarm demo

bench: install  ## benchmarks; each prints a table and one JSON line last
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/vendors.py
	$(BIN)/python bench/worker.py
	$(BIN)/python bench/dispatcher.py
	$(BIN)/python bench/megashard.py

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
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
