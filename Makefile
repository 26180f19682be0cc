# scaleops — every target installs what it needs first (see README "Quickstart").
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed

.PHONY: help setup system-packages demo test test-unit bench lint sandbox-up sandbox-down clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: system-packages $(STAMP) node_modules/.installed ## install Debian packages, .venv, Python and npm deps (idempotent)

system-packages: ## install the sandbox's Debian packages when missing (root), or name them
	@bash scripts/ensure-system-packages.sh

# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set (as on many machines and images)
# every process would otherwise compile everything it imports again.
$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	@$(BIN)/uv pip sync -q --compile-bytecode --python $(BIN)/python requirements/lock.txt
	@$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@$(BIN)/python -m compileall -q scaleops flows tasks > /dev/null
	@touch $(STAMP)

node_modules/.installed: package.json package-lock.json
	@npm ci --no-audit --no-fund --silent
	@touch node_modules/.installed

demo: setup ## bring the sandbox up, deploy prefect.yaml and run every duty once through its deployment
	$(BIN)/scaleops demo

test: setup ## lint, then the whole suite (unit tests run while the sandbox starts, then integration and e2e)
	@mkdir -p .sandbox && ($(BIN)/scaleops sandbox up > .sandbox/test-up.log 2>&1 &)
	@$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest -n 2 tests/unit
	$(BIN)/python -m pytest tests/integration tests/e2e

test-unit: setup ## unit tests only (no services), on both cores
	$(BIN)/python -m pytest -n 2 tests/unit

bench: setup ## run every benchmark beside its expert baseline
	$(BIN)/python -m bench

lint: setup ## ruff, ruff format, mypy and the import contracts (cli -> flows -> tasks -> core)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

sandbox-up: setup ## start every sandbox service
	$(BIN)/scaleops sandbox up

sandbox-down: ## stop the sandbox's processes
	-$(BIN)/scaleops sandbox down

clean: sandbox-down ## remove the venv and sandbox state
	rm -rf $(VENV) .sandbox .pytest_cache .mypy_cache .ruff_cache
