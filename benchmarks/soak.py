"""Soak run of the parallel launcher under a shared Optuna study, and the launcher speed comparison.

Soak (a few hundred tiny jobs; the numbers must say 0 lost and 0 duplicated):

    python benchmarks/soak.py                   # 240 jobs, 2 sweeper processes on one study
    python benchmarks/soak.py --jobs 24         # a quick check
    python benchmarks/soak.py --storage journal --sweepers 3 --workers 2 --batch 8

It starts ``--sweepers`` processes of

    python -m cl_sweep --multirun hydra/sweeper=optuna hydra/launcher=parallel \\
        hydra.launcher.n_jobs=<workers> hydra.sweeper.n_jobs=<batch> hydra.sweeper.n_trials=<jobs> \\
        hydra.sweeper.storage=<one shared sqlite/journal storage> hydra.sweeper.study_name=soak \\
        'optimizer.learning_rate=tag(log, interval(1e-5, 1e-3))' \\
        benchmark.limit_per_task=<limit> n_seeds=1 progress=false hydra.sweep.dir=<out>/sweep

at the same time, all on the same study and the same sweep folder (the joblib launcher underneath
each, so ``sweepers x workers`` jobs run at once), waits for them, then reconciles the study with
the files: every COMPLETE trial must have exactly one valid ``<sweep>/<trial number>/result.json``
whose overrides are the trial's and whose ``final_accuracy_mean`` is the trial's value, and every
result.json must belong to a COMPLETE trial. It prints jobs per minute, the trial states, the
number of lost results (a COMPLETE trial without its result, or a result without a COMPLETE trial,
or a result that disagrees with its trial) and of duplicated ones (two results or two COMPLETE
trials for the same point), and exits 1 unless both are 0 and the study holds ``--jobs`` COMPLETE
trials.

Launcher speed (one run, the same sweep through each launcher, wall time of the whole command):

    python benchmarks/soak.py --compare-launchers
    python benchmarks/soak.py --compare-launchers --variants basic,parallel,parallel_xla_default,population --rounds 2

The sweep is 8 jobs of ``+sweep=a6 activation=relu optimizer=sgdm`` (4 momenta x 2 learning
rates) with ``benchmark.limit_per_task=200 n_seeds=2 progress=false`` (``--compare-jobs 24``: 4 momenta
x 3 learning rates x 2 seed groups, where the one-off cost of starting workers weighs less). Variants: ``basic``
(Hydra's sequential launcher, XLA's default threads), ``parallel`` (joblib, 2 workers x 1 XLA
thread: cpu_threads follows the launcher), ``parallel_xla_default`` (joblib, 2 workers, each with
XLA's default thread count: ``cpu_threads=<all CPUs>``), ``population`` (the A.6 preset's own
launcher: grid points trained together as one vectorised population).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY_LR_SPACE = "tag(log, interval(1e-5, 1e-3))"


def _cli(args: list[str], log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "cl_sweep", *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


# --- soak ----------------------------------------------------------------------------------------
def soak(args: argparse.Namespace) -> int:
    import optuna

    from cl_sweep.results import ResultError, find_result_files, read_result

    out = Path(args.out or tempfile.mkdtemp(prefix="cl_sweep_soak_")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sweep_dir = out / "sweep"
    if sweep_dir.exists() and any(sweep_dir.iterdir()):
        print(f"soak: {sweep_dir} is not empty; give a fresh --out", file=sys.stderr)
        return 2
    storage = f"sqlite:///{out}/study.db" if args.storage == "sqlite" else f"journal:///{out}/study.log"
    common = [
        "--multirun", "hydra/sweeper=optuna", "hydra/launcher=parallel",
        f"hydra.launcher.n_jobs={args.workers}", f"hydra.sweeper.n_jobs={args.batch}",
        f"hydra.sweeper.n_trials={args.jobs}", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=soak",
        f"optimizer.learning_rate={TINY_LR_SPACE}",
        f"benchmark.limit_per_task={args.limit}", "n_seeds=1", "progress=false",
        f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}",
    ]
    print(
        f"soak: {args.jobs} jobs, {args.sweepers} sweeper process(es) x {args.workers} joblib workers, "
        f"batches of {args.batch}, storage {storage}\n      folder {out}",
        flush=True,
    )
    tic = time.perf_counter()
    procs = []
    for i in range(args.sweepers):
        # different sampler seeds: sweepers started together must not sample the same start-up points
        procs.append((_cli([*common, f"hydra.sweeper.sampler.seed={i}"], out / f"sweeper_{i}.log"), out / f"sweeper_{i}.log"))
        time.sleep(args.stagger)
    codes = [p.wait() for p, _ in procs]
    wall = time.perf_counter() - tic
    for (p, log), code in zip(procs, codes):
        if code != 0:
            print(f"soak: sweeper {log.name} exited {code}; its last lines:\n{_tail(log)}", file=sys.stderr)

    study = optuna.load_study(study_name="soak", storage=_optuna_storage(storage))
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    complete = {t.number: t for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    budget_fail = sum(1 for t in trials if t.state.name == "FAIL" and t.user_attrs.get("budget_exceeded"))

    results: dict[int, list[dict]] = {}
    corrupt, foreign = [], []
    for f in find_result_files(sweep_dir):
        try:
            r = read_result(f)
        except ResultError as e:
            corrupt.append(f"{f}: {e}")
            continue
        rel = f.parent.relative_to(sweep_dir)
        if len(rel.parts) != 1 or not rel.parts[0].isdigit():
            foreign.append(str(f))
            continue
        results.setdefault(int(rel.parts[0]), []).append(r)

    lost, disagree = [], []
    for num, t in complete.items():
        rs = results.get(num)
        if not rs:
            lost.append(f"trial {num} COMPLETE without result.json")
            continue
        r = rs[0]
        if not t.user_attrs.get("overrides") or not set(t.user_attrs["overrides"]) <= set(r["overrides"]):
            disagree.append(f"trial {num}: result overrides {r['overrides']} lack {t.user_attrs.get('overrides')}")
        elif not math.isclose(r["final_accuracy_mean"], t.value, rel_tol=0, abs_tol=1e-12):
            disagree.append(f"trial {num}: value {t.value} != result {r['final_accuracy_mean']}")
    state_of = {t.number: t.state.name for t in trials}
    orphans = [f"{sweep_dir / str(n)}/result.json without a COMPLETE trial (trial {n}: {state_of.get(n, 'none')})"
               for n in sorted(set(results) - set(complete))]
    lost += orphans + disagree + corrupt + [f"{f}: not in a trial's folder" for f in foreign]

    dup_results = sum(len(rs) - 1 for rs in results.values())  # cannot exceed 0 with one file name per folder
    point = Counter(tuple(sorted(r["overrides"])) for rs in results.values() for r in rs)
    dup_results += sum(c - 1 for c in point.values())
    params = Counter(tuple(sorted(t.params.items())) for t in complete.values())
    dup_trials = sum(c - 1 for c in params.values())
    duplicated = dup_results + dup_trials

    n_done = len(complete)
    print(f"\nsoak: {n_done} COMPLETE trials in {wall:.1f} s: {60 * n_done / wall:.1f} jobs per minute")
    print(f"      trial states: {dict(states)} (FAIL from the budget rule, never launched: {budget_fail})")
    print(f"      result.json files: {sum(len(rs) for rs in results.values())} valid, {len(corrupt)} invalid")
    print(f"      lost results: {len(lost)}")
    for line in lost[:20]:
        print(f"        {line}")
    print(f"      duplicated results: {duplicated} ({dup_results} result files, {dup_trials} COMPLETE trials)")
    ok = not lost and duplicated == 0 and n_done == args.jobs and all(c == 0 for c in codes)
    print("soak: OK" if ok else f"soak: FAILED (want {args.jobs} COMPLETE, 0 lost, 0 duplicated, every sweeper exit 0)")
    return 0 if ok else 1


def _optuna_storage(url: str):
    if url.startswith("journal:///"):
        import optuna
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal://"):]))
    return url


# --- launcher comparison -----------------------------------------------------------------------------
VARIANTS = {
    "basic": ["hydra/launcher=basic"],
    "parallel": ["hydra/launcher=parallel"],
    "parallel_xla_default": ["hydra/launcher=parallel", f"cpu_threads={len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}"],
    "population": [],  # the +sweep=a6 preset's own launcher
}
COMPARE_SWEEP = [
    "--multirun", "+sweep=a6", "activation=relu", "optimizer=sgdm", "optimizer.momentum=0.99,0.992,0.994,0.996",
    "benchmark.limit_per_task=200", "n_seeds=2", "progress=false",
]
COMPARE_SIZES = {  # jobs -> the overrides that make the grid that big
    8: ["optimizer.learning_rate=8e-6,1e-5"],
    24: ["optimizer.learning_rate=8e-6,1e-5,1.5e-5", "seed=0,2"],
}


def compare(args: argparse.Namespace) -> int:
    from cl_sweep.results import find_result_files, read_result

    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="cl_sweep_launchers_"))
    n_jobs = args.compare_jobs
    sweep = [*COMPARE_SWEEP, *COMPARE_SIZES[n_jobs]]
    print(f"sweep: python -m cl_sweep {' '.join(sweep)} hydra.sweep.dir=...  ({n_jobs} jobs); logs in {root}")
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            d = root / f"{v}_{r}"
            log = root / f"{v}_{r}.log"
            tic = time.perf_counter()
            code = _cli([*sweep, *VARIANTS[v], f"hydra.sweep.dir={d}"], log).wait()
            t = time.perf_counter() - tic
            n = sum(1 for f in find_result_files(d) if read_result(f))
            if code != 0 or n != n_jobs:
                print(f"{v}: exit {code}, {n}/{n_jobs} results; last lines:\n{_tail(log)}", file=sys.stderr)
                return 1
            times[v].append(t)
            print(f"round {r + 1}  {v:<22} {' '.join(VARIANTS[v]) or '(preset: population)':<45} {t:6.1f} s", flush=True)
    print(f"\nwall time of the {n_jobs}-job sweep, best of {args.rounds} round(s) (load average now: {os.getloadavg()[0]:.1f}):")
    base = min(times[variants[0]])
    for v in variants:
        print(f"  {v:<22} {min(times[v]):6.1f} s   x{base / min(times[v]):.2f} vs {variants[0]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=240, help="COMPLETE trials the study must end with (default 240)")
    p.add_argument("--sweepers", type=int, default=2, help="sweeper processes sharing the study (default 2)")
    p.add_argument("--workers", type=int, default=2, help="joblib workers per sweeper, hydra.launcher.n_jobs (default 2)")
    p.add_argument("--batch", type=int, default=8, help="trials per launcher batch, hydra.sweeper.n_jobs (default 8)")
    p.add_argument("--limit", type=int, default=64, help="benchmark.limit_per_task (default 64)")
    p.add_argument("--storage", choices=("sqlite", "journal"), default="sqlite", help="the shared study's storage")
    p.add_argument("--stagger", type=float, default=1.0, help="seconds between sweeper starts (default 1)")
    p.add_argument("--out", help="a fresh folder for the study, the sweep and the logs (default: a new temp folder)")
    p.add_argument("--compare-launchers", action="store_true", help="time the 8-job sweep through each launcher instead")
    p.add_argument("--variants", default="basic,parallel", help=f"with --compare-launchers: comma list of {', '.join(VARIANTS)}")
    p.add_argument("--rounds", type=int, default=1, help="with --compare-launchers: interleaved rounds (default 1)")
    p.add_argument("--compare-jobs", type=int, choices=sorted(COMPARE_SIZES), default=8, help="with --compare-launchers: sweep size (default 8)")
    args = p.parse_args(argv)
    return compare(args) if args.compare_launchers else soak(args)


if __name__ == "__main__":
    sys.exit(main())
