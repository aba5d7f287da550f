# Two commands on a fresh machine: `make serve` and `make test`. Each creates .venv as needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATABASE ?= fhir.db

$(BIN)/fhir-server: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install serve test lint bench load-synthea
install: $(BIN)/fhir-server

serve: install
	$(BIN)/fhir-server serve --database $(DATABASE)

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check fhir_server tests bench scripts
	$(BIN)/mypy fhir_server

bench: install
	$(BIN)/python -m bench.run

load-synthea: install
	$(BIN)/fhir-server load --database $(DATABASE) ../shared/synthea/0-*.json.bz2
	$(BIN)/fhir-server load --database $(DATABASE) $$(ls ../shared/synthea/*.json.bz2 | grep -v '/0-')
