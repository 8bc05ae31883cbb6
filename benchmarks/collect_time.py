"""Composing and collecting the whole A.6 grid's job configs, against Hydra's own compose of one job.

    .venv/bin/python benchmarks/collect_time.py [--rounds 2]

Before the population launcher trains anything it collects every job: its config as Hydra would
give it, its folder, and whether that folder already holds its complete result. This times that
collection (`hydra_plugins.cl_sweep_population_launcher.collect.collect_jobs`, what the launcher
calls) for the 1,943 jobs of ``+sweep=a6 'activation=glob(*)' 'optimizer=glob(*)' progress=false``,
in the same process and set up as ``python -m cl_sweep --multirun`` sets it up:

- fresh: into an empty folder, so every job is composed, validated and given its folder;
- resume: into a copy of the stored ``results/a6``, where every job is already complete.

Hydra's own ``load_sweep_config`` of one job, the per-job cost before, is timed in the same run,
before and after (rounds interleaved). Wall seconds depend on what else runs on the machine; the
CPU seconds of this process are printed beside them. That the configs are Hydra's is tested
(tests/test_sweeps.py::test_fast_collection_equals_hydras_for_every_preset); here a sample of the
fresh collection is compared with Hydra's once more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optuna_batch import cpu_name  # noqa: E402  (the same CPU line as the other benchmarks)

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["+sweep=a6", "activation=glob(*)", "optimizer=glob(*)", "progress=false"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (Hydra, fresh, resume), interleaved")
    ap.add_argument("--hydra-jobs", type=int, default=5, help="jobs Hydra composes per round for its per-job cost")
    args = ap.parse_args()

    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals
    from hydra.types import HydraContext, RunMode

    from cl_sweep.config import config_dir
    from hydra_plugins.cl_sweep_grid_sweeper.grid_sweeper import GridSweeper
    from hydra_plugins.cl_sweep_population_launcher.collect import collect_jobs

    tmp = Path(tempfile.mkdtemp(prefix="collect_time_"))
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="cl_sweep"):
            loader = GlobalHydra.instance().config_loader()

            def master_for(sweep_dir: Path):
                master = loader.load_configuration("config", [*COMMAND, f"hydra.sweep.dir={sweep_dir}"], RunMode.MULTIRUN)
                setup_globals()
                HydraConfig.instance().set_config(master)
                return master, HydraContext(config_loader=loader, callbacks=Callbacks(master))

            master, ctx = master_for(tmp / "fresh0")
            sweeper = GridSweeper(grid=master.hydra.sweeper.grid)
            sweeper.hydra_context, sweeper.config = ctx, master
            jobs = sweeper.job_overrides(list(master.hydra.overrides.task))
            sample = jobs[:: max(1, len(jobs) // args.hydra_jobs)][: args.hydra_jobs]
            print(f"{len(jobs)} jobs of python -m cl_sweep --multirun {' '.join(COMMAND)}")

            hydra_ms, fresh, resume = [], [], []
            for r in range(args.rounds):
                for job in sample:
                    tic = time.perf_counter()
                    loader.load_sweep_config(master, list(job))
                    hydra_ms.append(1000 * (time.perf_counter() - tic))

                master, ctx = master_for(tmp / f"fresh{r}")
                tic, cpu = time.perf_counter(), time.process_time()
                got = collect_jobs(master, ctx, jobs)
                fresh.append((time.perf_counter() - tic, time.process_time() - cpu))
                assert len(got.pending) == len(jobs) and got.n_done == 0
                if r == 0:
                    check(loader, master, jobs, got)

                copy = tmp / f"resume{r}"
                shutil.copytree(REPO / "results" / "a6", copy)
                master, ctx = master_for(copy)
                tic, cpu = time.perf_counter(), time.process_time()
                again = collect_jobs(master, ctx, jobs)
                resume.append((time.perf_counter() - tic, time.process_time() - cpu))
                assert again.n_done == len(jobs) and not again.pending, f"{len(again.pending)} stored jobs not recognised"

        per_job = statistics.median(hydra_ms)
        print(f"Hydra's load_sweep_config of one job: {per_job:.1f} ms (median of {len(hydra_ms)}; "
              f"{per_job * len(jobs) / 1000:.0f} s for the grid at that rate)")
        for name, runs in (("fresh (every job composed)", fresh), ("resume (every job complete)", resume)):
            wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
            print(f"{name}: {wall:.2f} s wall, {cpu:.2f} s CPU for {len(jobs)} jobs = {1000 * wall / len(jobs):.2f} ms "
                  f"per job, {per_job / (1000 * wall / len(jobs)):.0f} x faster than Hydra's compose of one job "
                  f"(best of {len(runs)}: {', '.join(f'{w:.2f}' for w, _ in runs)} s)")
        print(f"CPU: {cpu_name()}, {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check(loader, master, jobs, got) -> None:
    """A few collected configs against Hydra's ``load_sweep_config`` (without the hydra node, resolved)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    for i in range(0, len(jobs), len(jobs) // 4):
        cfg = loader.load_sweep_config(master, list(jobs[i]))
        HydraConfig.instance().set_config(cfg)
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        want = json.dumps(OmegaConf.to_container(task, resolve=True))
        [(_, p)] = [(j, p) for j, p in got.pending if j == i]
        assert json.dumps(p.cfg) == want and p.overrides == list(cfg.hydra.overrides.task), jobs[i]
    HydraConfig.instance().set_config(master)



if __name__ == "__main__":
    main()
