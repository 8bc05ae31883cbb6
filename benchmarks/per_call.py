"""Does filling calls across jobs pay? Two 5-seed jobs of one structure trained one `train_jobs` call
each (what the population launcher did before it batched jobs: on a CPU, populations of 2, 2 and 1
per job) against both in one call (what it does now, `train.jobs_per_batch`: 5 full populations of 2).

    python benchmarks/per_call.py [--rounds 2] [--limit-per-task N] [--test-limit-per-task N]

Both ways train the same 10 models (the default job, Hard ASH + Adagrad, at learning rates 2e-4 and
1e-4) in this process, after one warm-up round that compiles; the rounds alternate the two ways, so
a busy machine slows both alike. The numbers of every model must be the same both ways (checked).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optuna_batch import cpu_name  # noqa: E402  (the same CPU line as the other benchmarks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--limit-per-task", type=int, default=None, help="training examples per task (default: all)")
    ap.add_argument("--test-limit-per-task", type=int, default=None,
                    help="test examples per task the models are scored on (default: all; a quick check of the script)")
    args = ap.parse_args()

    from hydra import compose, initialize_config_dir

    import cl_sweep.config  # noqa: F401  registers the schemas
    from cl_sweep.training.engine import default_max_population
    from cl_sweep.training.train import train_jobs

    conf = Path(__file__).resolve().parents[1] / "conf"
    extra = ([f"benchmark.limit_per_task={args.limit_per_task}"] if args.limit_per_task else []) + (
        [f"benchmark.test_limit_per_task={args.test_limit_per_task}"] if args.test_limit_per_task else [])
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfgs = [compose(config_name="config", overrides=["progress=false", f"optimizer.learning_rate={lr}", *extra])
                for lr in (2e-4, 1e-4)]
    cap = default_max_population()

    def apart():
        return [r for c in cfgs for r in train_jobs([c], [[]])]

    def together():
        return train_jobs(cfgs, [[], []])

    ways = {"one job per call": apart, "both jobs in one call": together}
    paths = None
    for fn in ways.values():  # warm-up: compiles every population size used
        fn()
    times: dict[str, list[float]] = {name: [] for name in ways}
    numbers: dict[str, list] = {}
    for r in range(args.rounds):
        for name in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            tic = time.perf_counter()
            results = ways[name]()
            times[name].append(time.perf_counter() - tic)
            numbers[name] = [(res["final_accuracy"], res["accuracy_matrix"]) for res in results]
            paths = results[0]["versions"]["fast_paths"]
    same = numbers["one job per call"] == numbers["both jobs in one call"]
    # Where the fused update kernel runs within its tolerance rather than bit for bit (engine.fast_paths),
    # XLA's code around it differs between a population of 1 and of 2: the models that trained alone
    # differ by float rounding. The largest difference in final accuracy (percentage points):
    gap = max(abs(a - b) for (fa, _), (fb, _) in zip(numbers["one job per call"], numbers["both jobs in one call"])
              for a, b in zip(fa, fb))
    print(f"CPU: {cpu_name()}; populations of up to {cap} models; 2 jobs x 5 seeds; {args.rounds} rounds, alternating")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name}: {med:.2f} s (median; rounds {', '.join(f'{t:.2f}' for t in ts)}) = {med / 10:.3f} s per model")
    ratio = statistics.median(times["one job per call"]) / statistics.median(times["both jobs in one call"])
    print(f"one job per call / both in one call: {ratio:.3f}; every model's numbers identical both ways: {same}"
          + ("" if same else f" (largest final-accuracy difference {100 * gap:.2f} points; fast paths: {paths})"))


if __name__ == "__main__":
    main()
