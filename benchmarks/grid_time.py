"""End to end: time a documented slice of the A.6 grid (or all of it) through the real CLI.

    python benchmarks/grid_time.py [--stride 40] [--reference-steps 150]
    python benchmarks/grid_time.py --slice hard_ash_rmsprop [--stride 10]
    python benchmarks/grid_time.py --whole-grid [--time-limit 600] [--sweep-dir DIR]    # on a GPU

The default slice is every ``stride``-th job of the whole A.6 grid in the sweep's order (every
activation and optimizer; stride 40 = 49 jobs, 5 seeds each, early stop on), so the projection
mixes the optimizers the fused CPU kernel speeds up (Adagrad, RMSprop) with those it does not;
``--slice hard_ash_rmsprop`` takes every ``stride``-th of Hard ASH + RMSprop's 150 grid points
instead (the issue's example). Either runs as ``python -m cl_sweep --multirun +sweep=a6 ...`` in
a subprocess: process start, data loading, compilation and evaluation all count. The baseline,
timed in the same run, is a loop shaped like the paper's reference script: per-example ``vmap``,
one jitted call per step, the loss fetched to the host every step. The projection for the whole
grid uses the share of early-stopped jobs found in the stored results (results/a6).

``--whole-grid`` runs all 1,943 jobs of the A.6 grid (``activation=glob(*) optimizer=glob(*)``)
instead and reports their wall time; with ``--time-limit`` the sweep is stopped after that many
seconds and the figures cover the jobs finished by then (the order is the sweep's: row by row).
"""

from __future__ import annotations

import os

# The sweep runs in a second process: on a GPU neither process may grab most of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID_JOBS = 1943


def reference_style_ms_per_step(steps: int) -> float:
    """ms per step of a reference-shaped loop: per-example vmap, a jitted call and a host sync per step."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from cl_sweep.models import mlp
    from cl_sweep.components.activations import hard_ash
    from cl_sweep.data.datasets import load_dataset
    from cl_sweep.training.ops import weight_norm

    ds = load_dataset("mnist", progress=False)
    x_all = np.asarray(mlp.preprocess(jnp.asarray(ds.train_images[: steps * 64])))
    y_all = ds.train_labels[: steps * 64].astype(np.int32)
    params = mlp.init_params(jax.random.PRNGKey(0), 1000)
    tx = optax.chain(optax.adagrad(2e-4, initial_accumulator_value=1e-6), optax.clip(0.01))
    opt_state = tx.init(params)

    def one(p, x):  # one example at a time, as the reference's model __call__
        h = weight_norm(p["w1"]) .T @ x
        return hard_ash(h, alpha=3.0, z_k=2.3, beta=2.0) @ p["w2"]

    @jax.jit
    def step(p, s, xs, ys):
        def loss(p):
            logits = jax.vmap(one, in_axes=(None, 0))(p, xs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, ys).mean()

        value, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p)
        return value, optax.apply_updates(p, u), s

    value, params, opt_state = step(params, opt_state, x_all[:64], y_all[:64])  # compile
    tic = time.perf_counter()
    for i in range(steps):
        value, params, opt_state = step(params, opt_state, x_all[i * 64 : (i + 1) * 64], y_all[i * 64 : (i + 1) * 64])
        if np.isnan(float(value)):  # the host sync the reference does every step
            raise RuntimeError("nan")
    return 1000 * (time.perf_counter() - tic) / steps


def early_stop_share(root: Path) -> tuple[float, int]:
    from cl_sweep.results import find_result_files, read_result

    flags = []
    for f in find_result_files(root) if root.exists() else []:
        try:
            flags.append(read_result(f)["early_stopped"])
        except Exception:
            continue
    return (sum(flags) / len(flags) if flags else 0.0), len(flags)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slice", choices=("grid", "hard_ash_rmsprop"), default="grid")
    ap.add_argument("--stride", type=int, default=None, help="every stride-th job (default 40 of the grid, 10 of Hard ASH + RMSprop)")
    ap.add_argument("--reference-steps", type=int, default=150)
    ap.add_argument("--whole-grid", action="store_true", help="all 1,943 jobs of the A.6 grid instead of the slice")
    ap.add_argument("--time-limit", type=float, default=None, help="stop the sweep after this many seconds")
    ap.add_argument("--sweep-dir", default=None, help="keep the sweep's results here (default: a temporary folder)")
    ap.add_argument("--log", default=None, help="write the sweep's output here (default: kept in memory, shown on failure)")
    args = ap.parse_args()
    from cl_sweep.results import find_result_files, read_result

    ref_ms = reference_style_ms_per_step(args.reference_steps)
    with tempfile.TemporaryDirectory() as tmp:
        sweep_dir = args.sweep_dir or tmp
        if args.whole_grid:
            what = ["activation=glob(*)", "optimizer=glob(*)"]
            label = f"the whole A.6 grid ({GRID_JOBS} jobs)"
        elif args.slice == "grid":
            stride = args.stride or 40
            what = ["activation=glob(*)", "optimizer=glob(*)", f"hydra.sweeper.stride={stride}"]
            label = f"every {stride}th job of the whole A.6 grid"
        else:
            stride = args.stride or 10
            what = ["activation=hard_ash", "optimizer=rmsprop", f"hydra.sweeper.stride={stride}"]
            label = f"every {stride}th job of the A.6 grid of Hard ASH + RMSprop"
        cmd = [sys.executable, "-m", "cl_sweep", "--multirun", "+sweep=a6", *what, "progress=false", f"hydra.sweep.dir={sweep_dir}"]
        log_path = Path(args.log or Path(tmp) / "sweep.log")
        tic = time.perf_counter()
        with open(log_path, "w") as log:
            try:
                proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=args.time_limit)
                stopped = False
            except subprocess.TimeoutExpired:
                stopped = True
        wall = time.perf_counter() - tic
        if not stopped and proc.returncode != 0:
            sys.exit(log_path.read_text()[-3000:])
        results = [read_result(f) for f in find_result_files(sweep_dir)]
    jobs = len(results)
    if not jobs:
        sys.exit(f"no job finished within {wall:.0f} s")
    models = sum(len(r["seeds"]) for r in results)
    steps_per_model = 939
    per_model = wall / models
    share, n_stored = early_stop_share(REPO / "results" / "a6")
    grid_models = GRID_JOBS * (5 * (1 - share) + 2 * share)

    print(f"slice: {label}: {jobs} jobs, {models} models "
          f"({sum(r['early_stopped'] for r in results)} jobs early-stopped)"
          + (f"; stopped at the {args.time_limit:.0f} s limit" if stopped else ""))
    print(f"  wall time, whole CLI run (start, data, compile, train, evaluate, write): {wall:.1f} s = {per_model:.3f} s per model")
    print(f"reference-shaped loop (per-example vmap, jitted step, host sync per step): {ref_ms:.2f} ms/step "
          f"= {ref_ms * steps_per_model / 1000:.2f} s per model before evaluation")
    print(f"  speed-up of cl_sweep end to end over the reference-shaped loop's training alone: "
          f"{ref_ms * steps_per_model / 1000 / per_model:.1f}x")
    if args.whole_grid and not stopped:
        print(f"whole A.6 grid ({jobs} jobs, {models} models with the early-stop rule): {wall / 60:.1f} min, measured")
        return
    print(f"whole A.6 grid ({GRID_JOBS} jobs), projected at this slice's time per model:")
    print(f"  no early stop, 9,715 models: {9715 * per_model / 3600:.2f} h (reference-shaped: {9715 * ref_ms * steps_per_model / 1000 / 3600:.1f} h)")
    print(f"  with early stop, {100 * share:.0f}% of jobs early-stopped as in the {n_stored} stored results: "
          f"{grid_models:.0f} models, {grid_models * per_model / 3600:.2f} h")
    print(f"target 3 of #16 (whole grid <= 2 h on the Intel Xeon, <= 1.5 h on the AMD EPYC): "
          f"{grid_models * per_model / 3600:.2f} h projected from this slice (with early stop)")


if __name__ == "__main__":
    main()
