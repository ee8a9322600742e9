# gradcheck — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
HOST ?= 127.0.0.1
PORT ?= 8000
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: install run test lint typecheck pytest bench accuracy audit clean browser-deps

# .venv is rebuilt only when the lock or the project file changes.
$(VENV)/.installed: pyproject.toml uv.lock
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install -q "uv==$(UV_VERSION)"; }
	$(BIN)/uv sync --frozen --all-groups
	@touch $@

install: $(VENV)/.installed

run: install
	@echo "gradcheck: Swagger UI at http://$(HOST):$(PORT)/docs , explorer at http://$(HOST):$(PORT)/"
	$(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Debian's chromium for tests/browser (root; does nothing when it is already there).
browser-deps:
	bash ci/browser-setup.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts
