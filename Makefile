# Two commands on a fresh machine: `make run` (serve on the embedded defaults) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: run migrate install install-dev lint test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

migrate: install
	$(BIN)/pixforge migrate

run: migrate
	$(BIN)/pixforge serve

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/deptry .
	@# One commit point (DESIGN.md): nothing but app/db/session.py may commit.
	@if grep -rn --include='*.py' '\.commit(' app | grep -v '^app/db/session.py:'; then \
		echo "'.commit(' outside app/db/session.py"; exit 1; fi

# Two workers (this machine has two cores); tests that share one outside resource run in one worker
# (xdist_group). PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2

test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

# Benchmarks print numbers and ratios; they need the local PostgreSQL (BENCH_DATABASE_URL to change it);
# bench.mixed also needs Redis (BENCH_REDIS_URL, default DB 13, which it flushes) and exits 1 if its
# ledger audit fails.
bench: install-dev
	$(BIN)/python -m bench.identity
	$(BIN)/python -m bench.credits
	$(BIN)/python -m bench.images
	$(BIN)/python -m bench.design
	$(BIN)/python -m bench.analytics
	$(BIN)/python -m bench.hot_path
	$(BIN)/python -m bench.mixed

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
