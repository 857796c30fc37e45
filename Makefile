# The commands people type. `make demo` and `make test` set everything up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: help install demo up test test-unit test-integration test-e2e test-chaos lint format bench clean

help:
	@echo "make demo   stream the electricity data through the four services (set-up included)"
	@echo "make up     run the four services on the embedded defaults until Ctrl-C"
	@echo "make test   unit, integration, e2e and chaos tests (needs PostgreSQL and Redis running)"
	@echo "make lint   ruff and mypy;  make bench   the benchmarks in bench/"

$(STAMP): pyproject.toml
	@python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Continuo needs Python 3.11 or newer; python3 is " + sys.version.split()[0])'
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/continuo demo

# `exec`: the recipe's shell becomes continuo, so the SIGTERM make forwards reaches it.
up: $(STAMP)
	exec $(VENV)/bin/continuo up $(UP_ARGS)

test: test-unit test-integration test-e2e test-chaos

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration -q

test-e2e: $(STAMP)
	$(PY) -m pytest tests/e2e -q

test-chaos: $(STAMP)
	$(PY) -m pytest tests/chaos -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services continuo

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/learner.py
	$(PY) bench/system.py
	$(PY) bench/served.py
	$(PY) bench/served_kinds.py --kind regression
	$(PY) bench/served_kinds.py --kind multiclass
	$(PY) bench/entities.py
	$(PY) bench/canary.py
	$(PY) bench/entrants.py
	$(PY) bench/serving.py  # needs wrk (apt-get install wrk)
	$(PY) bench/throughput.py
	$(PY) bench/replay.py
	$(PY) bench/recovery.py
	$(PY) bench/chaos.py
	$(PY) bench/soak.py

clean:
	rm -rf var .pytest_cache .ruff_cache .mypy_cache
