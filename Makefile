# The two commands of the README. Both set up everything they need on a fresh Debian machine
# with Python 3.11: uv (from PyPI, into .tools/) and the locked dependencies (into .venv/).
SHELL := /bin/bash
UV := .tools/bin/uv
UV_RUN := $(UV) run --frozen
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
# Trust the machine's own certificate store, as pip and curl do (corporate proxies add their CA there).
export UV_SYSTEM_CERTS := 1
export DAGSTER_HOME := $(CURDIR)/var/dagster_home

.PHONY: run demo test lint typecheck check bench sync system-deps browser llm-env clean

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==0.13.8

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --extra production
	touch $@

# Debian packages the wheels use from the system: OpenMP for LightGBM, NUMA for vLLM.
system-deps:
	bash scripts/install-system-deps.sh

# chromium and its driver, for the UI test only.
browser:
	bash scripts/install-system-deps.sh --browser

sync: system-deps .venv/.synced

# Redis, the Dagster UI (http://127.0.0.1:3000) and daemon, the paper execution service
# (http://127.0.0.1:9464/metrics), supervised on one replay clock; Ctrl-C stops them all.
run: sync
	$(UV_RUN) sapphire run

# Backfill, train, backtest, paper-trade, feed back and retrain once, headless, in var/demo.
demo: sync
	$(UV_RUN) sapphire demo

# vLLM on CPU lives in its own environment (var/llm-venv): it pins torch and is 3 GB.
llm-env: $(UV)
	bash scripts/install-llm.sh

test: sync browser llm-env ## the whole test suite, the real vLLM engine and Chromium included
	$(UV_RUN) pytest -n 2 --dist loadfile

lint: sync
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .

typecheck: sync
	$(UV_RUN) mypy

check: lint typecheck
	DAGSTER_HOME=$(DAGSTER_HOME) $(UV_RUN) python -c "from sapphire_cli.main import dagster_home; dagster_home()"
	$(UV_RUN) dagster definitions validate -w workspace.yaml

bench: sync
	$(UV_RUN) python bench/bench_features.py

clean:
	rm -rf .venv .tools var
