# Two commands on a fresh machine: `make serve` and `make test`. Each creates .venv as needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATABASE ?= fhir.db
# `make serve` is the local demo: authorization off (the log and /metadata say so) so the
# README's curl examples run as they are; `make serve AUTH=on`, or `fhir-server serve`, for real
AUTH ?= off

$(BIN)/fhir-server: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install serve test test-slow lint bench load-synthea
install: $(BIN)/fhir-server

serve: install
	FHIR_SERVER_AUTH=$(AUTH) $(BIN)/fhir-server serve --database $(DATABASE)

test: install
	$(BIN)/pytest

# the long suites (real browsers, two-worker servers, process restarts, whole corpora, full
# Synthea; tests/conftest.py lists them); CI runs them too
test-slow: install
	$(BIN)/pytest --run-slow -m slow

lint: install
	$(BIN)/ruff check fhir_server integrations apps tests bench scripts
	$(BIN)/mypy fhir_server integrations apps

bench: install
	$(BIN)/python -m bench.run

load-synthea: install
	$(BIN)/fhir-server load --database $(DATABASE) ../shared/synthea/0-*.json.bz2
	$(BIN)/fhir-server load --database $(DATABASE) $$(ls ../shared/synthea/*.json.bz2 | grep -v '/0-')
