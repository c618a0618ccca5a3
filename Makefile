# The two commands of the README: `make run` (the local pipeline run) and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint bench compile validate graph lock clean

setup:
	@bash scripts/bootstrap.sh

run: setup
	$(BIN)/mlops run

test: setup
	$(BIN)/ruff check mlops pipelines steps tests bench
	$(BIN)/lint-imports
	CHECKOV_BIN=$(CURDIR)/.venv-checkov/bin/checkov $(BIN)/pytest

lint: setup
	$(BIN)/ruff check mlops pipelines steps tests bench
	$(BIN)/ruff format --check mlops pipelines steps tests bench

bench: setup
	$(BIN)/python bench/run_all.py

compile: setup
	$(BIN)/mlops compile --env $${MLOPS_ENV:-local} --out build

validate: setup
	$(BIN)/mlops validate --env $${MLOPS_ENV:-local}

graph: setup
	$(BIN)/mlops graph --env $${MLOPS_ENV:-local} --out build/model-build.svg

lock: setup
	@(echo "# Versions the test suite last passed with (pip constraints; torch is installed on its own: see scripts/bootstrap.sh)."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -i "^torch\|^nvidia\|^triton\|@ file") > constraints.txt

clean:
	rm -rf build .mlops .pytest_cache
