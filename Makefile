# Two commands set everything up on a fresh machine with Python 3.11:
#   make serve   run the service on the shipped model (http://127.0.0.1:8000; HOST/PORT override)
#   make test    install what the tests need and run the whole suite (browser tests: Debian's
#                chromium, `apt-get install chromium`; .ci/run installs it)
#   make test-quick  the tests that need no trained network, service process, browser or fresh
#                Python (marker `slow`, set in tests/conftest.py): under a minute here
#   make bench   measure the service (latency, throughput, memory...) and the `fer` package (in its
#                own bench/.fer-venv, made on first use) into bench/results/
# Installs are stamped: a second run with unchanged requirements installs nothing.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: serve test test-quick lint format screenshots quotes clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.serve-installed: requirements-serve.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-serve.txt
	$(BIN)/pip install --quiet --no-deps --editable .
	touch $@

$(VENV)/.dev-installed: requirements-serve.txt requirements-train.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --editable .
	touch $@ $(VENV)/.serve-installed

serve: $(VENV)/.serve-installed
	$(BIN)/python -m service

test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest

test-quick: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -m "not slow"

# SOAK_REQUESTS=2000 make bench: a shorter memory soak (the default is the 10-minute one).
# VIDEO_BENCH_SECONDS=120 make bench: a shorter long video (the default is the 10-minute one).
SOAK_REQUESTS ?= 10000
VIDEO_BENCH_SECONDS ?= 600

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/serve_bench.py --soak-requests $(SOAK_REQUESTS)
	$(BIN)/python bench/versus_fer.py --model artifacts/fast/emotion.onnx
	$(BIN)/python bench/hostile_clients.py
	$(BIN)/python bench/video_bench.py --long-seconds $(VIDEO_BENCH_SECONDS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The README's PNGs, taken by the system Chromium from the service running the shipped model.
screenshots: $(VENV)/.dev-installed
	$(BIN)/python -m scripts.screenshots

# The docs' example answers and quoted figures, rewritten from the shipped model after it changes.
quotes: $(VENV)/.dev-installed
	$(BIN)/python -m scripts.quotes

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
