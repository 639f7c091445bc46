# `make demo`: set up and run the MNIST-1D sweep end to end. `make test`: set up and run every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Token auth for the local Ray; set RAY_AUTH_MODE=disabled yourself to opt out.
export RAY_AUTH_MODE ?= token

.PHONY: setup demo test clean

setup: $(STAMP)

# torch first, pinned: its CPU build lies on disk here, while a range would pull a CUDA build of several GB.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/scalesweep demo

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) scalesweep.db mlartifacts reports
