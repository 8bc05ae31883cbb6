"""Batched Optuna trials as populations: trials per hour with ``hydra.sweeper.n_jobs=1`` vs ``N``.

    python benchmarks/optuna_batch.py [--trials 8] [--n-jobs 8] [--rounds 1] [--limit-per-task N]

Each side is the same real command, run in a fresh process and a fresh study:

    python -m cl_sweep --multirun hydra/sweeper=optuna hydra/launcher=population +search=a6
        activation=hard_ash optimizer=adagrad n_seeds=1 hydra.sweeper.n_trials=T
        hydra.sweeper.n_jobs=J hydra.sweeper.sampler.seed=0 progress=false

With ``n_jobs=1`` the sweeper asks one trial, the population launcher trains it, the next trial is
asked; with ``n_jobs=N`` it asks N trials at once and the launcher trains them together, in
populations of up to ``hydra.launcher.max_population`` models (2 on a CPU, 256 on a GPU) of one
compiled program. Process start, data loading and compilation count on both sides. The two sides
alternate within each round, so drift on a shared machine hits both. Prints the CPU (``lscpu``).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    get = lambda k: fields.get(k, "?").strip()  # noqa: E731
    return f"{get('Model name')} (family {get('CPU family')} model {get('Model')}, {os.cpu_count()} CPUs)"


def run(trials: int, n_jobs: int, limit: int | None) -> float:
    """Wall seconds of one sweep of ``trials`` trials asked ``n_jobs`` at a time (a fresh study)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "cl_sweep", "--multirun", "hydra/sweeper=optuna", "hydra/launcher=population",
            "+search=a6", "activation=hard_ash", "optimizer=adagrad", "n_seeds=1", f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweeper.n_jobs={n_jobs}", "hydra.sweeper.sampler.seed=0", "progress=false", f"hydra.sweep.dir={tmp}/s",
            f"hydra.sweeper.storage=sqlite:///{tmp}/study.db",
        ]
        if limit is not None:
            cmd.append(f"benchmark.limit_per_task={limit}")
        tic = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - tic
        if proc.returncode != 0:
            sys.exit(f"sweep with n_jobs={n_jobs} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
        done = sum(1 for p in Path(tmp, "s").glob("*/result.json"))
        if done != trials:
            sys.exit(f"sweep with n_jobs={n_jobs} wrote {done} results, expected {trials}")
    return wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8, help="trials per sweep (default 8)")
    ap.add_argument("--n-jobs", type=int, default=8, help="trials asked and trained together on the batched side (default 8)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of both sides (default 1)")
    ap.add_argument("--limit-per-task", type=int, default=None, help="train on this many examples per task (default: all)")
    args = ap.parse_args(argv)
    print(f"CPU: {cpu_name()}")
    walls: dict[int, list[float]] = {1: [], args.n_jobs: []}
    for r in range(args.rounds):
        for n_jobs in (1, args.n_jobs) if r % 2 == 0 else (args.n_jobs, 1):
            wall = run(args.trials, n_jobs, args.limit_per_task)
            walls[n_jobs].append(wall)
            print(f"round {r + 1}: n_jobs={n_jobs}: {args.trials} trials in {wall:.1f} s ({3600 * args.trials / wall:.0f} trials/hour)")
    best = {k: min(v) for k, v in walls.items()}
    for k, wall in best.items():
        print(f"n_jobs={k}: best {wall:.1f} s for {args.trials} trials = {3600 * args.trials / wall:.0f} trials/hour")
    print(f"speed-up of n_jobs={args.n_jobs} over n_jobs=1: {best[1] / best[args.n_jobs]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
