# `make demo`: set up and run the MNIST-1D sweep end to end. `make test`: set up and run every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Token auth for the local Ray; set RAY_AUTH_MODE=disabled yourself to opt out.
export RAY_AUTH_MODE ?= token

.PHONY: setup browser postgres demo test clean

setup: $(STAMP)

# torch first, pinned: its CPU build lies on disk here, while a range would pull a CUDA build of several GB.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/scalesweep demo

# The browser test opens the HTML report in Debian's headless Chromium. Install it with apt when it is
# missing and apt is usable (CI: root on Debian); elsewhere install it yourself or set SCALESWEEP_CHROMIUM.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }; \
	else echo "make browser: no $(CHROMIUM) and no root apt-get; the browser test will fail until Chromium is installed" >&2; fi

# Tests run an mlflow server on a real PostgreSQL: Debian's postgresql package, installed the same way.
postgres:
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; }; \
	else echo "make postgres: no PostgreSQL and no root apt-get; the PostgreSQL tests will fail until it is installed" >&2; fi

# Two pytest workers: most tests wait on servers, Ray and subprocesses, so two share 2 cores well.
TEST_WORKERS ?= 2
test: setup browser postgres
	SCALESWEEP_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

clean:
	rm -rf $(VENV) scalesweep.db mlartifacts reports
