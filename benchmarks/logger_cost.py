"""What each experiment tracker costs a job in wall time: the same job with logger=none and with each logger.

    python benchmarks/logger_cost.py [--rounds 3] [--loggers none,csv,tensorboard,mlflow,wandb] [--limit-per-task N] [--seeds N]

Every job is a whole process (``python -m cl_sweep progress=false logger=...``: interpreter start,
imports, data, compilation, training, evaluation, the tracker's runs and result.json), the
default job unless ``--limit-per-task``/``--seeds`` slice it. The loggers run in interleaved
rounds, each round in a rotated order, so a shared machine's drift hits every logger alike; a
logger's overhead is the median over rounds of its time minus ``none``'s time in the same round, in
wall time and in CPU time (user + system of the job's process and what it waited for: on a shared
machine other programs stretch the wall time far more than the CPU time).
MLflow logs into one SQLite database (``sqlite:///<tmp>/mlruns.db``) that an untimed first job
creates, as the jobs of a sweep do after its first; W&B runs offline (``logger.offline=true``).
An untimed ``none`` job first warms the machine's caches (the CPU kernels' proof, the data).
Each timed job must exit 0 and leave its result.json and its tracker's runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optuna_batch import cpu_name  # noqa: E402  (the same CPU line as the other benchmarks)

LOGGERS = ("none", "csv", "tensorboard", "mlflow", "wandb")



def logger_overrides(name: str, tmp: Path) -> list[str]:
    return {
        "none": ["logger=none"],
        "csv": ["logger=csv"],
        "tensorboard": ["logger=tensorboard"],
        "mlflow": ["logger=mlflow", f"logger.tracking_uri=sqlite:///{tmp / 'mlruns.db'}", "logger.experiment_name=logger_cost"],
        "wandb": ["logger=wandb", "logger.project=logger_cost", "logger.offline=true", f"logger.dir={tmp}"],
    }[name]


def logged_runs(name: str, run_dir: Path, tmp: Path, before: int) -> int:
    """How many tracker runs the job left (for mlflow and wandb: how many more than before it)."""
    if name in ("csv", "tensorboard"):
        return len(list((run_dir / name).glob("seed_*")))
    if name == "wandb":
        return len(list((tmp / "wandb").glob("offline-run-*"))) - before
    if name == "mlflow" and (tmp / "mlruns.db").exists():
        import sqlite3

        with sqlite3.connect(tmp / "mlruns.db") as db:
            return db.execute("select count(*) from tags where key = 'seed'").fetchone()[0] - before
    return 0


def run_job(name: str, tmp: Path, label: str, job_args: list[str]) -> tuple[float, float]:
    """(wall time, CPU time) of one job's whole process with logger ``name``: the CPU time (user + system,
    the job and what it waited for) hardly moves when other programs share the cores, the wall time does."""
    run_dir = tmp / label
    before = logged_runs(name, run_dir, tmp, 0) if name in ("mlflow", "wandb") else 0
    cmd = [sys.executable, "-m", "cl_sweep", "progress=false", *job_args, *logger_overrides(name, tmp),
           f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_DIR": str(tmp)}
    t, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
    wall, cpu = time.perf_counter() - t, _children_cpu() - cpu
    if proc.returncode != 0:
        sys.exit(f"logger_cost: `{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    result = json.loads((run_dir / "result.json").read_text())
    seeds = len(result["final_accuracy"])
    if name != "none" and logged_runs(name, run_dir, tmp, before) != seeds:
        sys.exit(f"logger_cost: logger={name} logged {logged_runs(name, run_dir, tmp, before)} runs, not one per seed ({seeds})")
    return wall, cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loggers", default=",".join(LOGGERS), help="comma-separated; none is always timed too")
    ap.add_argument("--limit-per-task", type=int, default=None, help="a slice: training examples per task (default: all)")
    ap.add_argument("--seeds", type=int, default=None, help="a slice: n_seeds (default: the job's 5)")
    args = ap.parse_args()
    names = ["none", *[n for n in args.loggers.split(",") if n and n != "none"]]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        ap.error(f"--loggers: {','.join(unknown)} is not one of {','.join(LOGGERS)}")
    job_args = [*([f"benchmark.limit_per_task={args.limit_per_task}"] if args.limit_per_task else []),
                *([f"n_seeds={args.seeds}"] if args.seeds else [])]

    with tempfile.TemporaryDirectory(prefix="logger_cost_") as d:
        tmp = Path(d)
        run_job("none", tmp, "warmup_none", job_args)
        if "mlflow" in names:
            run_job("mlflow", tmp, "warmup_mlflow", job_args)  # creates the database and the experiment
        process: dict[str, list[float]] = {n: [] for n in names}
        cpu: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                wall, used = run_job(name, tmp, f"r{r}_{name}", job_args)
                process[name].append(wall)
                cpu[name].append(used)
                print(f"round {r + 1}/{args.rounds}  logger={name:<12} wall {wall:6.1f} s  CPU {used:6.1f} s", flush=True)

    import jax

    job = "python -m cl_sweep progress=false " + " ".join(job_args) + (" " if job_args else "") + "logger=..."
    print(f"\nCPU: {cpu_name()} ({os.cpu_count()} cores), jax {jax.__version__}, Python {platform.python_version()}")
    print(f"job: {job}; {args.rounds} interleaved rounds; medians over rounds")
    print(f"{'logger':<13}{'wall s':>8}{'overhead s':>12}{'overhead %':>12}{'CPU s':>8}{'overhead s':>12}{'overhead %':>12}")
    for name in names:
        row = f"{name:<13}"
        for times in (process, cpu):
            over = statistics.median(t - b for t, b in zip(times[name], times["none"]))  # same round
            row += f"{statistics.median(times[name]):>8.1f}{over:>+12.1f}{100 * over / statistics.median(times['none']):>+11.0f}%"
        print(row)
    print("(the whole `python -m cl_sweep` process: wall time, and CPU time = user + system; overhead: the median of "
          "the per-round differences to logger=none)")


if __name__ == "__main__":
    main()
