"""Re-run stored results from the overrides they record and compare the numbers bit for bit.

    .venv/bin/python scripts/rerun_stored.py             # one stored A.6 grid point per activation
    .venv/bin/python scripts/rerun_stored.py results/a6 --per-activation 3 --strict
    python scripts/rerun_stored.py path/to/result.json ...

A stored result is re-runnable when ``python -m cl_sweep <its overrides>`` gives the same final
accuracy per seed. That is promised on the machine (CPU model) that made it: XLA emits different
code for other CPU models, so there a seed may differ in the last digit. The first file of each
activation (in path order) is taken, so the selection is the same on every run. Prints one line
per job; with ``--strict`` it exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def select(paths: list[Path], per_activation: int) -> list[Path]:
    files = []
    for p in paths:
        files.extend(sorted(p.rglob("result.json")) if p.is_dir() else [p])
    chosen, seen = [], defaultdict(int)
    for f in files:
        act = json.loads(f.read_text())["activation"]
        if seen[act] < per_activation:
            seen[act] += 1
            chosen.append(f)
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path, default=[REPO / "results" / "a6"])
    ap.add_argument("--per-activation", type=int, default=1)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a job differs (on the machine that made them)")
    args = ap.parse_args(argv)

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from cl_sweep.config import config_dir  # importing it registers the schemas
    from cl_sweep.training.train import train_and_evaluate

    files = select(args.paths, args.per_activation)
    differ, largest, n_seeds = 0, (0.0, ""), 0
    for f in files:
        stored = json.loads(f.read_text())
        overrides = [o for o in stored["overrides"] if not o.startswith(("progress=", "hydra."))] + ["progress=false"]
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        start = time.perf_counter()
        new = train_and_evaluate(OmegaConf.to_container(cfg, resolve=True), overrides=overrides)
        same = new["final_accuracy"] == stored["final_accuracy"] and new["seeds"] == stored["seeds"]
        differ += not same
        # per seed trained both times (the early-stop rule may stop one run after 2 seeds and not the other)
        was = dict(zip(stored["seeds"], stored["final_accuracy"]))
        for seed, acc in zip(new["seeds"], new["final_accuracy"]):
            if seed in was and acc is not None and was[seed] is not None:
                n_seeds += 1
                largest = max(largest, (100 * abs(acc - was[seed]), f"{stored['activation']} + {stored['optimizer']}, seed {seed}"))
        paths = (stored.get("versions", {}).get("fast_paths"), new["versions"]["fast_paths"])
        rel = f.relative_to(REPO) if f.is_relative_to(REPO) else f
        print(f"{'same' if same else 'DIFFERENT'}  {stored['activation']:>13} + {stored['optimizer']:<8} "
              f"{len(new['seeds'])} seeds  {time.perf_counter() - start:5.1f} s  {rel}"
              + ("" if same else f"\n      stored {stored['final_accuracy']}\n      now    {new['final_accuracy']}")
              + ("" if paths[0] == paths[1] else f"\n      fast paths: stored {paths[0]}, now {paths[1]}"))
    print(f"{len(files) - differ} of {len(files)} jobs re-ran to the stored final accuracies bit for bit; "
          f"largest difference of a seed's final accuracy: {largest[0]:.2f} points ({largest[1] or 'none'}, "
          f"{n_seeds} seeds compared)")
    return 1 if differ and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
