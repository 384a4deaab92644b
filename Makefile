# Two entry points a new user needs; both create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SCENARIO ?= scenarios/deepseek-67b-serving-h100.yaml

$(BIN)/planner: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(BIN)/planner

.PHONY: demo test bench
demo: $(BIN)/planner
	$(BIN)/planner solve $(SCENARIO)

test: $(BIN)/planner
	$(BIN)/python -m pytest

bench: $(BIN)/planner
	$(BIN)/python bench/solve_bench.py
