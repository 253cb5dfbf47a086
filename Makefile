# One task runner for people and CI. `make demo` runs the server with demo data on SQLite;
# `make test` runs lint, types and the whole test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test lint typecheck unit reliability soak bench format clean web web-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/fieldsync demo
	$(BIN)/fieldsync serve

test: lint web-check typecheck unit reliability

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench reliability
	$(BIN)/ruff format --check src tests bench reliability
	$(BIN)/lint-imports

# The field web app: `web` rebuilds src/fieldsync/webapp/static/ from web/ with the pinned
# tools (Node 20 and npm); the bundle is committed, so serving /app needs no Node.
web:
	npm ci --prefix web --no-audit --no-fund
	npm run build --prefix web

# the SDK's types (tsc --noEmit, strict JSDoc) and lint, the app's node tests, and a failure
# when the committed bundle is not what the sources build
web-check: web
	npm run typecheck --prefix web
	npm run lint --prefix web
	npm test --prefix web/app
	git diff --exit-code --stat -- src/fieldsync/webapp/static
	@test -z "$$(git status --porcelain -- src/fieldsync/webapp/static)" || \
		(git status --short -- src/fieldsync/webapp/static; echo "web bundle out of date: run make web and commit"; exit 1)

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
	$(PY) bench/upload.py
	$(PY) bench/webapi.py
	$(PY) bench/writes.py
	$(PY) bench/load.py
	$(PY) bench/files.py
	$(PY) bench/browser.py

format: $(VENV)/.installed
	$(BIN)/ruff format src tests bench reliability
	$(BIN)/ruff check --fix src tests bench reliability

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
