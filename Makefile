# gradcheck. `make run` installs the runtime dependencies only and serves; `make test` (and the
# other development targets) install the development groups too. Both install into .venv with
# `uv sync --inexact` and a stamp file each, so alternating them installs nothing twice and
# neither uninstalls what the other installed. uv itself lives outside .venv, in .venv-tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .venv-tools
UV_VERSION := 0.13.9
UV     := $(TOOLS)/bin/uv
HOST ?= 127.0.0.1
PORT ?= 8000
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

# glibc's malloc, for a process that allocates and frees arrays of megabytes on every request:
# blocks up to 32 MiB come from the heap (glibc's largest mmap threshold on 64-bit) and 64 MiB
# of free memory stays at the top of the heap, so freed memory is reused instead of being
# returned to the kernel and faulted in, zeroed, by the next request (about half the server
# time of an N=256, C=100 .npz request); 2 arenas, so that worker threads do not each keep their
# own. Process-wide, hence set where the process starts: here for `make run` and `make bench`,
# and the same three values in the Dockerfile, docker-compose.yml and deploy/kubernetes
# (tests/core/test_allocator.py checks they agree).
ALLOCATOR_ENV := MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=67108864

# uvicorn keeps an idle keep-alive connection open for 75 s (its default is 5 s). A client on a
# busy machine may read a response seconds after the server wrote it and then reuse the
# connection at once: closing it 5 s after writing resets that next request (seen as
# ReadError under load). 75 s also outlasts nginx's upstream keep-alive (60 s). The same value
# in the Dockerfile, docker-compose.yml, deploy/ and the tests' servers (tests/core/test_keep_alive.py).
SERVER_ENV := UVICORN_TIMEOUT_KEEP_ALIVE=75

.PHONY: install install-dev run test test-fast lint typecheck docs pytest security bench accuracy \
	audit clean browser-deps torch

# uv, pinned, in a venv of its own (never in .venv, where a sync could remove it).
$(TOOLS)/.uv-$(UV_VERSION):
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	@touch $@

# .venv is made from $(PYTHON) (as a plain venv) the first time either install needs it.
$(BIN)/python:
	$(PYTHON) -m venv --without-pip $(VENV)

# Runtime dependencies only (no dev group); re-run only when the lock or the project changes.
$(VENV)/.installed-runtime: pyproject.toml uv.lock | $(TOOLS)/.uv-$(UV_VERSION) $(BIN)/python
	$(UV) sync --frozen --inexact --no-dev
	@touch $@

# Every dependency group (tests, linters, docs, bench), which includes the runtime ones.
$(VENV)/.installed-dev: pyproject.toml uv.lock | $(TOOLS)/.uv-$(UV_VERSION) $(BIN)/python
	$(UV) sync --frozen --inexact --all-groups
	@touch $@ $(VENV)/.installed-runtime

install: $(VENV)/.installed-runtime

install-dev: $(VENV)/.installed-dev

run: install
	@echo "gradcheck: Swagger UI at http://$(HOST):$(PORT)/docs , explorer at http://$(HOST):$(PORT)/"
	exec env $(ALLOCATOR_ENV) $(SERVER_ENV) $(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT)

# import-linter's contracts (.importlinter) keep the layers pointing down.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install-dev
	$(BIN)/mypy

# The MkDocs site (mkdocs.yml, docs/), built strictly: a broken link or include fails.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(VENV)/site

pytest: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck security docs pytest

# The inner loop: the tests that start no server and are not marked slow (a minute or two, not
# the whole suite's several); `make test` stays the whole suite.
test-fast: install-dev
	$(BIN)/python -m pytest -m "not live and not slow" $(PYTEST_ARGS)

# bandit on app/, then pip-audit of every package in uv.lock against PyPI's advisories, which
# pip-audit reads from PyPI's per-release JSON API (pypi.org/pypi/NAME/VERSION/json). Where that
# API is not reachable (a mirror or proxy serving only /simple), the audit cannot run: it is
# reported as skipped, or fails with GRADCHECK_REQUIRE_AUDIT=1.
LOCKED_REQUIREMENTS := $(VENV)/locked-requirements.txt
AUDIT_PROBE := https://pypi.org/pypi/pip-audit/2.10.1/json
security: install-dev
	$(BIN)/bandit -q -c pyproject.toml -r app
	$(UV) export --frozen --all-groups --no-emit-project --format requirements-txt --quiet -o $(LOCKED_REQUIREMENTS)
	@if $(BIN)/python -c "import urllib.request; urllib.request.urlopen('$(AUDIT_PROBE)', timeout=20)" 2>/dev/null; then \
		echo "$(BIN)/pip-audit --strict --disable-pip -s pypi -r $(LOCKED_REQUIREMENTS)"; \
		$(BIN)/pip-audit --strict --disable-pip -s pypi --progress-spinner off -r $(LOCKED_REQUIREMENTS); \
	elif [ "$$GRADCHECK_REQUIRE_AUDIT" = 1 ]; then \
		echo "security: pip-audit cannot reach $(AUDIT_PROBE) (GRADCHECK_REQUIRE_AUDIT=1)"; exit 1; \
	else \
		echo "security: SKIPPED pip-audit: $(AUDIT_PROBE) is not reachable from here, nothing was audited"; \
	fi

# Issue 6's benchmark: bench/run.py starts uvicorn (bench.app:app = the service plus a bare
# endpoint) on 127.0.0.1 at a free port, runs every case (one module each, bench/caseN_*.py)
# beside its baseline, stops it, prints the table and writes bench/results/bench.{json,md,png}
# (docs: Performance). About two minutes; BENCH_ARGS=--quick for a seconds-long run at tiny
# sizes, BENCH_ARGS="--case 7" for one case alone.
bench: install-dev
	$(ALLOCATOR_ENV) $(SERVER_ENV) $(BIN)/python -m bench.run $(BENCH_ARGS)

# PyTorch, for the tests that compare with it (tests/api/routes/test_torch_parity.py runs its
# own test inputs for cross-entropy) and for its column in `make accuracy`; never a dependency of
# the service, so not in uv.lock. pip (the tools venv's, installing into .venv) finds the CPU
# build of torch 2.13.0 that these machines keep on disk; elsewhere it downloads it. Without
# torch those tests skip (they fail under GRADCHECK_REQUIRE_ALL=1, as .ci/run sets).
TORCH_REQUIREMENTS := torch==2.13.0 expecttest
torch: install-dev | $(TOOLS)/.uv-$(UV_VERSION)
	$(TOOLS)/bin/python -m pip --python $(BIN)/python install -q --disable-pip-version-check $(TORCH_REQUIREMENTS)

# Worst per-row error of every output on adversarial cases against mpmath (docs/accuracy.md),
# written to accuracy/results.md and .json. PyTorch's figures appear beside ours when torch is
# importable (`make torch`). ACCURACY_ARGS=--size quick for a short run.
accuracy: install-dev
	$(BIN)/python -m accuracy.report $(ACCURACY_ARGS)

# Debian's chromium for tests/browser (root; does nothing when it is already there).
browser-deps:
	bash ci/browser-setup.sh

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts
