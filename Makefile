# cl_sweep — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RESULTS ?= results
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)  # Debian packages (Fashion-MNIST, PostgreSQL) need root
PYTEST_ARGS ?= -n 2   # two workers: the slow tests are subprocess-bound

.DEFAULT_GOAL := help
.PHONY: help setup data train test test-fast tables figures bench reproduce postgres postgres-stop soak bench-launchers clean

help:  ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

setup: $(PY)  ## create .venv, install cl_sweep with its test tools, fetch and verify MNIST
	$(PY) -m pip install --quiet -e '.[dev]'
	$(MAKE) --no-print-directory data

data:  ## fetch MNIST and Fashion-MNIST into the cache ($CL_SWEEP_DATA_DIR or ~/.cache/cl_sweep) and verify them
	@if command -v apt-get >/dev/null && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist \
	  || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST must come from the mirrors"; fi
	$(PY) -c "from cl_sweep.data import load_dataset, cache_dir; d = load_dataset('mnist'); print(f'MNIST ok: {len(d.train_labels)} train / {len(d.test_labels)} test in {cache_dir()}')"
	$(PY) -c "from cl_sweep.data import load_dataset, cache_dir; d = load_dataset('fashion_mnist'); print(f'Fashion-MNIST ok: {len(d.train_labels)} train / {len(d.test_labels)} test in {cache_dir()}')"

train:  ## the main job: Hard ASH + Adagrad on Split-MNIST, 5 seeds (ARGS='key=value ...' to override)
	$(PY) -m cl_sweep $(ARGS)

test:  ## run the whole test suite (slow tests included), as CI does; starts PostgreSQL for the shared-study tests
	CL_SWEEP_TEST_POSTGRES_URL="$${CL_SWEEP_TEST_POSTGRES_URL:-$$(scripts/postgres.sh start)}" $(PY) -m pytest $(PYTEST_ARGS)

test-fast:  ## only the fast tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

tables:  ## rebuild every table from stored results (RESULTS=<folder> for another folder)
	$(PY) -m cl_sweep.tables $(RESULTS) --out tables

ROWS ?= hard_ash,ash,topk_subtract,topk_mask,lwta,relu,swish,sigmoid,hard_sigmoid
OPTIMIZERS ?= adagrad sgd sgdm adam rmsprop
reproduce:  ## run the A.6 grid into results/a6, column by column (ROWS=..., OPTIMIZERS=...); resumable
	for opt in $(OPTIMIZERS); do \
	  $(PY) -m cl_sweep --multirun +sweep=a6 activation=$(ROWS) optimizer=$$opt progress=false hydra.sweep.dir=results/a6 || exit 1; \
	done

figures:  ## draw every figure from stored results into figures/ (RESULTS=<folder> for another folder)
	$(PY) -m cl_sweep.figures $(RESULTS) --out figures

bench:  ## every CPU speed figure of the README's Performance section, each against a baseline timed in the same run
	$(PY) benchmarks/step_time.py --ablation
	$(PY) benchmarks/ops_bench.py
	$(PY) benchmarks/grid_time.py

JOBS ?= 240
soak:  ## soak: JOBS tiny jobs (default 240) via the joblib launcher + one shared Optuna study; must print 0 lost, 0 duplicated
	$(PY) benchmarks/soak.py --jobs $(JOBS)

bench-launchers:  ## wall time of one 8-job A.6 sweep through the basic vs the joblib launcher
	$(PY) benchmarks/soak.py --compare-launchers --rounds 2

postgres:  ## start the private PostgreSQL server for shared studies and tests (installs Debian's package if missing); prints its URL
	scripts/postgres.sh start

postgres-stop:  ## stop that server (data kept in $CL_SWEEP_PG_DIR, default /tmp/cl_sweep_pg)
	scripts/postgres.sh stop

clean:  ## remove caches and scratch outputs (keeps results/ and the MNIST cache)
	rm -rf .pytest_cache outputs build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
