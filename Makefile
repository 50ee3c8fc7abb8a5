# crsmon task runner. `make demo` and `make check` are the README's two commands:
# each creates the virtual environment it needs from nothing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo check lint typecheck test test-unit test-spec test-property test-cli format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-install when pyproject.toml changes.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.runtime

## The main job on the embedded default (SQLite, in-process grading, no server):
## replay a synthetic 20-patient, 14-day feed through intake, grading and alerts.
demo: $(VENV)/.runtime
	$(BIN)/crsmon demo

## Everything CI runs: lint, format check, type check, all tests.
check: lint typecheck test

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

# Coverage: 95 % overall and 100 % (branches included) for the pure core.
# Two test processes (pytest-xdist), one test file each at a time: most of the
# suite waits on real processes and servers, so two halve the wall time on two
# cores. PYTEST_WORKERS=0 runs in one process (e.g. to debug).
PYTEST_WORKERS ?= 2
test: $(VENV)/.dev
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --cov --cov-report=term --cov-fail-under=95
	$(BIN)/python -m coverage report --include='crsmon/domain/*' --fail-under=100 --skip-covered

test-unit test-spec test-property test-cli: $(VENV)/.dev
	$(BIN)/python -m pytest tests/$(subst test-,,$@)

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
