# The newcomer path: `make demo` and `make test` create the virtualenv themselves (idempotently).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test lint typecheck unit bench clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' Makefile | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv and install selfheal with its dev tools

demo: venv  ## the main job on the embedded default: simulate, train, register, score live traffic
	$(BIN)/selfheal demo

lint: venv  ## ruff
	$(BIN)/ruff check .

typecheck: venv  ## mypy over every package
	$(BIN)/mypy

unit: venv  ## the test suite only
	$(BIN)/pytest -q

test: lint typecheck unit  ## lint, type-check and run every test

bench: venv  ## performance benchmarks (ratios against baselines measured in the same run)
	$(BIN)/python -m benchmarks

clean:  ## remove the virtualenv and the default workspace
	rm -rf $(VENV) .selfheal
