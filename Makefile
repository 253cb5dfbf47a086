# One task runner for people and CI. `make demo` runs the server with demo data on SQLite;
# `make test` runs lint, types and the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test lint typecheck unit reliability soak bench format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/fieldsync demo
	$(BIN)/fieldsync serve

test: lint typecheck unit reliability

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench reliability
	$(BIN)/ruff format --check src tests bench reliability
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed
	$(BIN)/mypy

unit: $(VENV)/.installed
	$(BIN)/pytest -n auto

reliability: $(VENV)/.installed
	$(PY) reliability/run.py
	$(PY) reliability/attacks.py

soak: $(VENV)/.installed
	$(PY) reliability/run.py --soak

bench: $(VENV)/.installed
	$(PY) bench/records.py
	$(PY) bench/security.py
	$(PY) bench/query.py
	$(PY) bench/sync.py
	$(PY) bench/webapi.py
	$(PY) bench/writes.py
	$(PY) bench/load.py
	$(PY) bench/files.py

format: $(VENV)/.installed
	$(BIN)/ruff format src tests bench reliability
	$(BIN)/ruff check --fix src tests bench reliability

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
