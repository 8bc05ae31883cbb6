#!/usr/bin/env bash
# The GPU benchmark as one call on a lent GPU machine: environment, the default job (accuracy),
# ms per step by population size (benchmarks/step_time.py), and the whole A.6 grid end to end
# (benchmarks/grid_time.py --whole-grid). Every stage has its own time limit and log, so one
# failing stage loses nothing of the others.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
#   STAGES=grid_time GRID_SWEEP_LIMIT=400 bash benchmarks/gpu_check.sh     # one stage, another limit
#
# The machine this was written for has python3 with jax[cuda] but no Hydra/Optuna and no network:
# .gpu/ (ignored by git; built here by benchmarks/gpu_carry.sh) carries them as wheels and MNIST
# as the .gz files cl_sweep checks by SHA-256. On a machine where `pip install -e '.[cuda]'`
# works, run the three stage commands at the bottom directly.
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# grid_time.py runs its reference loop and then the CLI in a second process: neither may grab
# 75% of the GPU's memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if [ -d .gpu ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
    cp -r .gpu/pure/. /tmp/site/
    export PYTHONPATH=/tmp/site:$PWD/src CL_SWEEP_DATA_DIR=$PWD/.gpu/data
fi

stage() {  # stage NAME LIMIT_S COMMAND...: runs it under a time limit into $OUT/NAME.log
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    case " ${STAGES:-default_job step_time grid_time} " in *" $name "*) ;; *) return ;; esac
    echo "=== $name (limit ${limit} s): $*"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "=== $name: rc $rc, $((SECONDS - start)) s"
    grep -v "^\[.*\]\[.*\]\[INFO\]" "$OUT/$name.log" | tail -n "${TAIL:-30}"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, jax, jaxlib, optax, numpy, hydra, optuna; print(sys.version.split()[0], 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__, 'hydra', hydra.__version__, 'optuna', optuna.__version__, jax.devices())"
stage default_job "${DEFAULT_LIMIT:-90}" python3 -m cl_sweep activation=hard_ash optimizer=adagrad progress=false hydra.run.dir=/tmp/run_default
stage step_time "${STEP_LIMIT:-150}" python3 benchmarks/step_time.py --populations "${POPULATIONS:-1,16,64,256,1024}" --repeats 3
stage grid_time "${GRID_LIMIT:-330}" python3 benchmarks/grid_time.py --whole-grid --time-limit "${GRID_SWEEP_LIMIT:-300}" --sweep-dir /tmp/gpu_a6 --log "$OUT/grid_sweep.log"
(cd /tmp && find gpu_a6 -name result.json | tar czf "$OUT/gpu_a6_results.tgz" -T -) 2>/dev/null
echo "=== done in $SECONDS s"
