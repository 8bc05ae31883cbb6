"""Sharded population sweeps on this machine: jobs per minute with 1 vs 2 shards (`population_submitit_local`).

    python benchmarks/shards_time.py [--rounds 2] [--limit-per-task 1000] [--n-seeds 2]

Each side is the same real command, run in a fresh process into a fresh sweep folder:

    python -m cl_sweep --multirun +sweep=a6 activation=relu optimizer=sgd,adagrad
        hydra/launcher=population_submitit_local hydra.launcher.shards=S
        benchmark.limit_per_task=L n_seeds=N progress=false

(6 jobs of 2 structures). Process starts (the sweep's and each shard's), data loading, compilation and
training all count. The sides alternate within each round, so drift on a shared machine hits both.
Prints the CPU (``lscpu``).
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optuna_batch import REPO, cpu_name  # noqa: E402  (the same CPU line as the other benchmarks)

GRID = ["+sweep=a6", "activation=relu", "optimizer=sgd,adagrad", "hydra/launcher=population_submitit_local"]


def run(shards: int, limit: int, n_seeds: int, folder: Path) -> tuple[int, float]:
    """(result files written, wall seconds) of one sweep."""
    cmd = [sys.executable, "-m", "cl_sweep", "--multirun", *GRID, f"hydra.launcher.shards={shards}",
           f"benchmark.limit_per_task={limit}", f"n_seeds={n_seeds}", "progress=false", f"hydra.sweep.dir={folder}"]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        sys.exit(f"shards={shards} failed:\n{proc.stderr[-3000:]}")
    return len(list(folder.rglob("result.json"))), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit-per-task", type=int, default=1000)
    ap.add_argument("--n-seeds", type=int, default=2)
    args = ap.parse_args()
    print(cpu_name())
    walls: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for shards in (1, 2):
                jobs, wall = run(shards, args.limit_per_task, args.n_seeds, Path(tmp) / f"r{r}_s{shards}")
                walls[shards].append(wall)
                print(f"round {r + 1}, shards={shards}: {jobs} jobs in {wall:.1f} s, {60 * jobs / wall:.1f} jobs/min", flush=True)
    best = {s: min(w) for s, w in walls.items()}
    print(f"best of {args.rounds}: 1 shard {60 * jobs / best[1]:.1f} jobs/min, 2 shards {60 * jobs / best[2]:.1f} jobs/min "
          f"({best[1] / best[2]:.2f}x)")


if __name__ == "__main__":
    main()
