# One obvious way to run, test, lint, type-check and benchmark.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
SUB ?= dev-user

.PHONY: run test check lint format typecheck token bench bench-sweep lock clean screenshots client

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	@touch $@ $(VENV)/.runtime

## make run: serve on :8000 (SQLite default, migrated). Unless JWT_SECRET or JWKS_URL is set,
## writes a random development JWT_SECRET into .env first (once per checkout).
run: $(VENV)/.runtime
	@$(BIN)/python -m taskapi.devsecret
	$(BIN)/alembic upgrade head
	$(BIN)/uvicorn main:app --reload --port $(PORT) --http taskapi.server:HttpToolsProtocol --no-server-header

## make test: the whole suite, on SQLite and PostgreSQL
test: $(VENV)/.dev
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(VENV)/.dev
	$(BIN)/mypy main.py taskapi migrations tests bench clients/typescript/generate.py

check: lint typecheck test

## make token SUB=alice: a development token for curl or /docs, signed with JWT_SECRET (the
## one `make run` wrote into .env, unless you set your own); refused in production
token: $(VENV)/.runtime
	@$(BIN)/python -m taskapi.devtoken $(SUB)

## make bench: the load benchmark against PostgreSQL (needs wrk: apt-get install wrk)
bench: $(VENV)/.dev
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-sweep: $(VENV)/.dev
	$(BIN)/python bench/run.py --sweep $(BENCH_ARGS)

## make client: regenerate clients/typescript/src/schema.d.ts from the running service's /openapi.json
client: $(VENV)/.runtime
	$(BIN)/python clients/typescript/generate.py

## make screenshots: the browser tests, saving their screenshots to docs/screenshots/
screenshots: $(VENV)/.dev
	SCREENSHOT_DIR=docs/screenshots $(BIN)/pytest tests/frontend $(PYTEST_ARGS)

## make lock: re-pin requirements*.txt from requirements*.in
lock: $(VENV)/.dev
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements.in -o requirements.txt
	$(BIN)/uv pip compile --quiet --python-version 3.11 requirements-dev.in -o requirements-dev.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
