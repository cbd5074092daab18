# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-all conformance bench assets clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch==2.13.0 is pinned in the dev extra: its CPU wheel is local here; never let anything pull a newer one.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,all]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sporeling demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -p no:cacheprovider -m ''

conformance: $(STAMP)
	$(BIN)/python -m tests.conformance

assets: $(STAMP)
	$(BIN)/python scripts/fetch_assets.py

bench: $(STAMP)
	$(BIN)/python benchmarks/latency.py --threads 1

clean:
	rm -rf $(VENV) build *.egg-info
