#!/usr/bin/env bash
# Builds .gpu/ (ignored by git), what benchmarks/gpu_check.sh needs on a GPU machine that has
# python3 3.12 with jax[cuda], optax, numpy, pandas, tqdm and matplotlib but no network:
#   .gpu/whl   Hydra, OmegaConf, Optuna and their pure-Python needs as cp312 wheels
#   .gpu/pure  antlr4-python3-runtime 4.9.3 (published as a source archive only), copied from .venv
#   .gpu/data  MNIST as the .gz files cl_sweep accepts in its cache (checked against SHA-256 there)
#
#   bash benchmarks/gpu_carry.sh        # here, after `make setup`; about 18 MB
set -eu
PY=${PY:-.venv/bin/python}
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
DATA=${CL_SWEEP_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cl_sweep}
grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >>.git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/pure .gpu/data/mnist
for p in hydra-core==1.3.8 omegaconf==2.3.1 optuna==5.0.0 alembic==1.20.1 SQLAlchemy==2.1.9 \
         colorlog==6.12.0 Mako==1.4.3 hydra-joblib-launcher==1.2.0; do
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/whl "$p"
done
cp -r "$SITE/antlr4" "$SITE"/antlr4_python3_runtime-4.9.3.dist-info .gpu/pure/
for f in "$DATA"/mnist/*-ubyte; do gzip -9 -c "$f" >".gpu/data/mnist/$(basename "$f").gz"; done
du -sh .gpu
