# leadflow: the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
LEADFLOW := $(VENV)/bin/leadflow
DB ?= leadflow.db
DEMO_LEADS ?= 400
DEMO_MONTHS ?= 6
export LEADFLOW_DATABASE_URL ?= sqlite:///./$(DB)

.PHONY: run test install install-test install-browser pg-up bench lint fmt unit integration e2e clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/activate pyproject.toml
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test install-browser

## Debian's Chromium (Playwright's own browser download does not work offline) + playwright
install-browser: $(VENV)/.installed
	@test -x /usr/bin/chromium || { apt-get update && apt-get install -y chromium; }
	@$(PY) -c 'import playwright' 2>/dev/null || $(PIP) install 'playwright>=1.40'

## make run: install, create ./leadflow.db, load the demo world, serve on :8000
run: install
	@if [ ! -f "$(DB)" ]; then \
		$(LEADFLOW) init && \
		$(LEADFLOW) demo --leads $(DEMO_LEADS) --months $(DEMO_MONTHS) --seed 7 --until $$(date +%F); \
	else \
		$(LEADFLOW) db upgrade; \
	fi
	$(LEADFLOW) serve --host 127.0.0.1 --port 8000

## PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth) for the test suite
pg-up:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start && \
		for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; }
	@pg_isready -h 127.0.0.1 -p 5432

## make test: lint, types, then the whole suite on SQLite and PostgreSQL
test: install-test pg-up
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest tests -q -ra -n 2 --dist loadfile

unit: install-test
	$(PY) -m pytest tests/unit -q

integration: install-test pg-up
	$(PY) -m pytest tests/integration -q

e2e: install-test pg-up
	$(PY) -m pytest tests/e2e -q

bench: install-test pg-up
	$(PIP) install -e '.[bench]'
	@for f in benchmarks/[!_]*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

fmt: install-test
	$(VENV)/bin/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) $(DB) $(DB)-wal $(DB)-shm $(DB).ingest.lock
