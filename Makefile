# hpsearch: `make demo` runs a real search on this machine, `make test` runs every test it can.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export HPSEARCH_STORAGE ?= sqlite:///hpsearch.db

.PHONY: install demo test test-fast lint clean data browser

install: $(VENV)/.installed-test data browser  ## venv + package + test tools + Fashion-MNIST + chromium (idempotent)

$(VENV)/.installed-demo: pyproject.toml  ## the package and what it needs to run, nothing else
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-demo  ## + test tools, drivers, jax
	$(BIN)/pip install --quiet -e '.[test,jax]'
	touch $@

data:  ## Fashion-MNIST: Debian's package where apt exists, else the keras download
	@if [ -f $(FMNIST) ] || [ -n "$$HPSEARCH_DATA_DIR" ]; then exit 0; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)); \
	else $(BIN)/python -c "import keras; keras.datasets.fashion_mnist.load_data()"; fi

browser:  ## Debian's chromium for the dashboard browser tests (skipped without root/apt)
	@if command -v chromium >/dev/null || ! command -v apt-get >/dev/null || [ "$$(id -u)" != 0 ]; then exit 0; \
	else (apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	      (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)); fi

demo: $(VENV)/.installed-demo data  ## search Fashion-MNIST CNNs with 2 local workers (about 7 min on 2 cores, see README)
	$(BIN)/hpsearch run studies/fashion_mnist_quick.toml --workers 2

test: install  ## type check, then every test this machine can run (slow, PostgreSQL, MariaDB, Slurm, browser); lists the 25 slowest
	$(BIN)/mypy hpsearch
	$(BIN)/python -m pytest --all --durations=25

test-fast:  ## unit tests only, on up to 4 CPUs (pytest-xdist)
	$(BIN)/python -m pytest -n auto --maxprocesses 4

lint:
	$(BIN)/ruff check hpsearch tests benchmarks
	$(BIN)/ruff format --check hpsearch tests benchmarks
	$(BIN)/mypy hpsearch

clean:
	rm -rf runs hpsearch.db test-artifacts .pytest_cache
