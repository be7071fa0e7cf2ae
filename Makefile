# churnguard — the two commands: `make demo` (main job end to end) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed

# The dependency audit: known CVEs (PyPI's advisory data) in the locked versions of the serving,
# registry and reporting stack. Accepted findings, each with its reason, live in audit-accepted.txt.
AUDIT_PACKAGES := bentoml mlflow mlflow-skinny mlflow-tracing evidently
.PHONY: setup demo test lint bench clean lock audit load load-replicas

setup: $(STAMP)

# Re-install only when the lock or the project metadata changes. Bytecode is compiled at install:
# PYTHONDONTWRITEBYTECODE=1 (CI, the image) would otherwise make every process recompile its imports.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q churnguard service training monitoring alerts
	touch $(STAMP)

demo: setup
	$(BIN)/churnguard demo

test: setup audit
	$(BIN)/ruff check .
	bash tests/ensure_chromium.sh
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/simulate.py
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/lab.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/drift.py
	$(BIN)/python benchmarks/drift_detection.py --seeds 20

# Fails on any known vulnerability not listed in audit-accepted.txt, and when a package cannot be audited.
audit: setup
	$(BIN)/python tools/audit.py $(AUDIT_PACKAGES)

# The 5-minute, 32-client load scenario (locust in a second process; see benchmarks/load.py).
load: setup
	$(BIN)/python benchmarks/load.py --duration 300 --users 32

# The same scenario over two replicas sharing one fresh PostgreSQL database (see benchmarks/replicas.py).
load-replicas: setup
	$(BIN)/python benchmarks/replicas.py --duration 300 --users 32

# Regenerate the lock after editing dependencies in pyproject.toml.
lock: setup
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra spark --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .churnguard
