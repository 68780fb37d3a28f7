# lafa developer entry points. `make setup` builds .venv from pyproject.toml; every other target uses it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LAFA   := $(BIN)/lafa
JOBS   ?= 2

.PHONY: setup test shards demo bench lint clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest -n $(JOBS) -q tests

lint: setup
	$(BIN)/ruff check lafa data_prep tests
