# The newcomer path: `make demo` and `make test` create the virtualenv themselves (idempotently).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test lint typecheck unit eval bench clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' Makefile | sed 's/:.*##/\t/'

RUNTIME_STAMP := $(VENV)/.runtime-stamp

# The demo needs only the runtime packages: a fresh clone skips the dev tools (type checker, browser
# driver, test libraries) and reaches the story sooner. `make test` adds them.
$(RUNTIME_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $(RUNTIME_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP) $(RUNTIME_STAMP)

venv: $(STAMP)  ## create .venv and install selfheal with its dev tools

demo: $(RUNTIME_STAMP)  ## the main job on the embedded default: simulate, train, register, fix three faults live
	$(BIN)/selfheal demo

lint: venv  ## ruff
	$(BIN)/ruff check .

typecheck: venv  ## mypy over every package
	$(BIN)/mypy

# --no-loadscope-reorder: hand out modules in collection order, which tests/conftest.py starts with the
# modules holding `slow` tests; xdist's default order (most tests first) handed those out last.
unit: venv  ## the test suite only, one worker per core (a module's tests stay on one worker)
	$(BIN)/pytest -q -n auto --dist loadfile --no-loadscope-reorder

test: lint typecheck unit  ## lint, type-check and run every test

eval: venv  ## the offline eval suite: every scenario, 3 seeds, default size, 2 workers; results in test-artifacts/eval-results.json
	$(BIN)/selfheal eval run --seeds 3 --size default --workers 2 --json test-artifacts/eval-results.json

bench: venv  ## performance benchmarks (ratios against baselines measured in the same run)
	$(BIN)/python -m benchmarks

clean:  ## remove the virtualenv, the default workspace and the demo's
	rm -rf $(VENV) .selfheal .selfheal-demo
