"""Target 1 of #16 end to end: the default job against the minimal pure-JAX floor job, whole processes.

    .venv/bin/python benchmarks/job_vs_floor.py [--rounds 3] [--limit-per-task N] [--test-limit-per-task N]

The default job is ``python -m cl_sweep progress=false`` (Hard ASH + Adagrad, 5 seeds, Split-MNIST,
evaluation after every task, result.json written). The floor job (``--floor``: this file run as a
process) is the smallest honest job of the same shapes: 5 seeds of a 784→1000→10 MLP with ReLU, plain
SGD, no weight norm, no update clip, batch 64, the five tasks' shuffled batches gathered on the device
from the same uint8 MNIST inside one ``lax.scan`` per task (one program: every task trains the smallest
task's number of full batches), the seeds one after another (on a CPU the fastest per model), and the test accuracy of every task after each task. Both are timed from process start to exit (imports, data
loading, compilation and evaluation included), in interleaved rounds so a shared machine's drift hits
both alike; the best round of each is compared.

Both kinds of job keep XLA's compiled programs on disk (cl_sweep does by default,
cl_sweep.training.compile_cache; the floor job gets JAX's own persistent cache, the same mechanism), so
each is timed twice per round: *cold*, with an empty compilation cache of its own (a machine's first
run of that job), then *warm*, the same process again with the programs the cold run left (every later
run). The data, and cl_sweep's CPU kernels and their proof, are cached on the machine in both cases.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEEDS, TASKS, BATCH, HIDDEN = 5, 5, 64, 1000


def floor_job(limit_per_task: int | None, test_limit_per_task: int | None = None) -> None:
    """The floor job itself (runs in its own process); prints its mean final accuracy."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax import lax

    from cl_sweep.data.datasets import load_dataset
    from cl_sweep.data.tasks import class_incremental_split, limit_test

    ds = load_dataset("mnist", progress=False)
    images, labels = jnp.asarray(ds.train_images), jnp.asarray(ds.train_labels.astype(np.int32))
    split, keep = limit_test(class_incremental_split(ds.train_labels, ds.test_labels, TASKS, 2), test_limit_per_task)
    keep = slice(None) if keep is None else keep  # the default job's test examples (benchmark.test_limit_per_task)
    test_x = jnp.asarray(ds.test_images[keep])
    test_y = jnp.asarray(ds.test_labels[keep].astype(np.int32))
    test_task = jnp.asarray(split.test_task)

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (784, HIDDEN)) * (2 / 784) ** 0.5,
                "w2": jax.random.normal(k2, (HIDDEN, 10)) * (1 / HIDDEN) ** 0.5}

    def logits(p, x):
        return jax.nn.relu((x.astype(jnp.float32) / 255.0) @ p["w1"]) @ p["w2"]

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()

    # The data go in as arguments: a jitted closure over them would compile them in as constants.
    @jax.jit
    def train_task(p, images, labels, idx):  # one model; idx: [steps, B]
        def body(p, i):
            g = jax.grad(loss)(p, images[i], labels[i])
            return jax.tree_util.tree_map(lambda a, b: a - 1e-3 * b, p, g), None

        return lax.scan(body, p, idx)[0]

    @jax.jit
    def task_accuracy(p, test_x, test_y, test_task):  # [T]: accuracy on each task's test images
        correct = (jnp.argmax(logits(p, test_x), -1) == test_y).astype(jnp.float32)
        onehot = (test_task[:, None] == jnp.arange(TASKS)[None]).astype(jnp.float32)
        return (correct @ onehot) / onehot.sum(0)

    # Every task trains the same number of steps (the smallest task's full batches: 175 of the 183-197
    # the default job takes), so the floor compiles one program: a slightly faster floor, never a slower one.
    steps = min(len(split.train_indices[t][:limit_per_task]) for t in range(TASKS)) // BATCH
    finals = []
    for seed in range(SEEDS):  # one model at a time: on a CPU the fastest per model (benchmarks/step_time.py)
        params, rng = init(jax.random.PRNGKey(seed)), np.random.default_rng(seed)
        for t in range(TASKS):
            rows = split.train_indices[t][:limit_per_task]
            idx = rng.permutation(rows)[: steps * BATCH].reshape(steps, BATCH)
            params = train_task(params, images, labels, jnp.asarray(idx))
            acc = task_accuracy(params, test_x, test_y, test_task)
        finals.append(float(np.asarray(acc).mean()))
    final = np.asarray(finals)
    print(f"floor job: final accuracy {100 * final.mean():.1f} % (5 seeds, ReLU + SGD; not a result, a speed floor)")


COMPILED = re.compile(r"Finished XLA compilation of .* in ([0-9.eE+-]+) sec")


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, seconds XLA spent compiling or loading compiled programs, from JAX_LOG_COMPILES's lines)."""
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "JAX_LOG_COMPILES": "1", **env})
    wall = time.perf_counter() - tic
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, sum(float(x) for x in COMPILED.findall(proc.stdout + proc.stderr))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit-per-task", type=int, default=None, help="training examples per task (default: all)")
    ap.add_argument("--test-limit-per-task", type=int, default=None,
                    help="test examples per task each job is scored on (default: all; a quick check of the script)")
    ap.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)  # run the floor job in this process
    args = ap.parse_args()
    if args.floor:
        floor_job(args.limit_per_task, args.test_limit_per_task)
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from optuna_batch import cpu_name

    limit = ([f"--limit-per-task={args.limit_per_task}"] if args.limit_per_task else []) + (
        [f"--test-limit-per-task={args.test_limit_per_task}"] if args.test_limit_per_task else [])
    cache_env = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    kinds = ("default job", "floor job")
    times: dict[tuple[str, str], list[float]] = {(k, c): [] for k in kinds for c in ("cold", "warm")}
    compiling: dict[tuple[str, str], list[float]] = {k: [] for k in times}
    with tempfile.TemporaryDirectory(prefix="job_vs_floor_") as tmp:
        def run(name: str, r: int, cache: str) -> tuple[float, float]:
            folder = f"{tmp}/r{r}/{'job' if name == 'default job' else 'floor'}"
            if name == "default job":  # a fresh folder each time: a complete result there would be skipped
                cmd = [sys.executable, "-m", "cl_sweep", "progress=false", f"hydra.run.dir={folder}/run_{cache}",
                       *([f"benchmark.limit_per_task={args.limit_per_task}"] if args.limit_per_task else []),
                       *([f"benchmark.test_limit_per_task={args.test_limit_per_task}"] if args.test_limit_per_task else [])]
                env = {"CL_SWEEP_XLA_CACHE": f"{folder}/xla"}
            else:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--floor", *limit]
                env = {"JAX_COMPILATION_CACHE_DIR": f"{folder}/xla", **cache_env}
            return timed(cmd, REPO, env)

        for r in range(args.rounds):  # interleaved, the order alternating; each round's caches start empty
            order = kinds if r % 2 == 0 else kinds[::-1]
            for cache in ("cold", "warm"):
                for name in order:
                    wall, compile_s = run(name, r, cache)
                    times[(name, cache)].append(wall)
                    compiling[(name, cache)].append(compile_s)
    best = {k: min(v) for k, v in times.items()}
    print(f"CPU: {cpu_name()}; {os.cpu_count()} CPUs; {args.rounds} interleaved rounds, whole processes"
          + (f"; {args.limit_per_task} examples per task" if args.limit_per_task else "")
          + (f"; scored on {args.test_limit_per_task} test examples per task" if args.test_limit_per_task else ""))
    for (name, cache), ts in times.items():
        print(f"  {name}, {cache} compilation cache: {best[(name, cache)]:.1f} s (best; rounds {', '.join(f'{t:.1f}' for t in ts)}); "
              f"XLA compiling or loading {min(compiling[(name, cache)]):.2f} s")
    ratio = {c: best[("default job", c)] / best[("floor job", c)] for c in ("cold", "warm")}
    print(f"target 1 of #16 (<= 1.5): default job / floor job, end to end = {ratio['cold']:.2f} with empty "
          f"compilation caches (a machine's first run), {ratio['warm']:.2f} with the programs cached (later runs)")


if __name__ == "__main__":
    main()
