"""The `population` launcher: groups a sweep's jobs by program and trains each group as one population.

Each job still gets its own folder, its own Hydra logs and its own ``result.json``, identical to
what the job writes alone (same code path: `cl_sweep.training.train.train_jobs`); only the training of
grid points that share an (activation, optimizer) structure is fused into one ``vmap``-ed
program. Jobs whose result is already complete are skipped; the jobs of one structure go to
`train_jobs` in small batches (`jobs_per_batch`) whose calls are filled across jobs, and each
job's result is written as soon as its last model has trained, so a killed sweep loses only the
jobs in flight.
"""

import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from cl_sweep.progress import report, sweep_progress

from .collect import Pending, collect_jobs

log = logging.getLogger(__name__)


class PopulationLauncher(Launcher):
    # It composes every job's config before training any: it runs the value checks there, so the
    # grid sweeper need not compose every job a second time (half of a big sweep's start-up).
    validates_jobs = True

    def __init__(self, max_population: Optional[int] = None, precompile: Optional[bool] = None) -> None:
        super().__init__()
        self.precompile = precompile
        if max_population is None:
            from cl_sweep.training.engine import default_max_population

            max_population = default_max_population()
        if max_population < 1:
            raise ValueError(f"hydra.launcher.max_population={max_population} is not allowed; it must be >= 1")
        self.max_population = max_population
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # the sweep's line: its sweeper's (grid, Optuna), else this batch's own (Hydra's basic sweeper)
        with sweep_progress(len(job_overrides), self.config):
            returns, groups = self.collect(job_overrides, initial_job_idx)
            self.train(groups, returns)
            return returns

    def train(self, groups: dict, returns: list) -> None:
        """Trains the collected groups (`collect`), filling each job's JobReturn."""
        pending = [p for jobs in groups.values() for _, p in jobs]
        precompile = self.precompile
        if precompile is None:
            import jax

            precompile = jax.default_backend() != "cpu" and len(groups) > 1
        if precompile and groups:
            self._precompile(list(groups.values()))
        from cl_sweep.tracking import Tracking, TrackerError

        try:  # every tracker the sweep's jobs ask for starts before any of them trains
            tracking = Tracking.open([p.cfg for p in pending])
        except TrackerError as e:
            raise SystemExit(f"cl_sweep: {e}") from None
        try:
            self._train(groups, returns, tracking)
        finally:
            tracking.close()

    def collect(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> tuple[list[JobReturn], dict]:
        """Composes, checks and collects every job (creating its folder and Hydra files, training nothing).

        Returns one JobReturn per job, in order (an already complete job's holds its stored
        objective), and the jobs left to train grouped by population key, in the sweep's order:
        ``{key: [(index in job_overrides, Pending), ...]}``. The sharded launchers split these.
        """
        from cl_sweep.results import check_results_folder
        from cl_sweep.training.train import population_key

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        try:
            check_results_folder(str(self.config.hydra.sweep.dir), allow_dirty=bool(self.config.get("allow_dirty_results", False)))
        except ValueError as e:
            raise SystemExit(f"cl_sweep: {e}") from None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs as populations of up to {self.max_population} models")

        tic = time.perf_counter()
        returns, pending, n_done, composer = collect_jobs(self.config, self.hydra_context, job_overrides, initial_job_idx)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        log.info(
            f"composed and collected {len(job_overrides)} jobs in {time.perf_counter() - tic:.1f} s "
            f"({composer.misses} composed by Hydra, {composer.factored} from those by config group, "
            f"{composer.hits} from their group's config)"
        )
        if n_done:  # one line for a resumed sweep, not one per finished job (hydra.verbose lists them)
            log.info(f"{n_done} of {len(job_overrides)} jobs already complete, not re-run: their results are kept")

        groups: dict[Any, list[tuple[int, Pending]]] = {}
        for i, p in pending:
            groups.setdefault(population_key(p.cfg), []).append((i, p))
        return returns, groups

    def _train(self, groups: dict, returns: list, tracking) -> None:
        from cl_sweep.cli import pruning_listeners, run_jobs, summary
        from cl_sweep.training.train import objective

        for g, (key, jobs) in enumerate(groups.items()):
            cfg0 = jobs[0][1].cfg
            per_batch = self._per_batch(cfg0)
            log.info(
                f"population {g + 1}/{len(groups)}: {cfg0['activation']['name']} + {cfg0['optimizer']['name']}, "
                f"{len(jobs)} jobs in batches of {per_batch}, calls of up to {self.max_population} models"
            )
            for lo in range(0, len(jobs), per_batch):
                part = jobs[lo : lo + per_batch]
                tic = time.perf_counter()
                done: set[int] = set()

                def written(j: int, result: dict, path: Path, part=part, done=done) -> None:
                    # each job reports as soon as its result is written, not at the batch's end
                    i, p = part[j]
                    done.add(i)
                    returns[i].return_value = objective(result)
                    report(returns[i])
                    print(summary(result, path).splitlines()[1] + f"  [{', '.join(filter_overrides(p.overrides))}]")

                try:
                    run_jobs(
                        [p.cfg for _, p in part], [p.overrides for _, p in part], [p.output_dir for _, p in part],
                        max_population=self.max_population, desc=f"pop {g + 1}/{len(groups)} ",
                        # a pruned job stops at its task boundary and leaves the population
                        listeners=pruning_listeners([p.reporter for _, p in part]),
                        tracking=tracking, sweep_dir=str(self.config.hydra.sweep.dir), on_written=written,
                    )
                except Exception as e:  # the jobs of this batch not yet written fail; the sweep goes on
                    lost = [i for i, _ in part if i not in done]
                    log.error(f"population {g + 1}, jobs {lo + 1}-{lo + len(part)}: {len(lost)} failed "
                              f"({len(part) - len(lost)} finished and kept): {type(e).__name__}: {e}")
                    for i in lost:
                        returns[i].status = JobStatus.FAILED
                        returns[i]._return_value = e
                        report(returns[i])
                    continue
                log.info(f"  {len(part)} jobs in {time.perf_counter() - tic:.1f} s")

    def _per_batch(self, cfg: dict) -> int:
        """Jobs per `train_jobs` call (`cl_sweep.training.train.jobs_per_batch`)."""
        from cl_sweep.training.train import jobs_per_batch

        return jobs_per_batch(cfg, self.max_population)

    def _precompile(self, groups: list) -> None:
        """Compiles every group's first population in parallel threads (XLA compiles without the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        from cl_sweep.training.train import train_jobs

        firsts = [[p.cfg for _, p in jobs[: self._per_batch(jobs[0][1].cfg)]] for jobs in groups]

        def one(cfgs: list) -> None:
            try:
                train_jobs(cfgs, [[]] * len(cfgs), max_population=self.max_population, compile_only=True)
            except Exception as e:  # the real call compiles (or fails) again, with its own report
                log.warning(f"precompiling {cfgs[0]['activation']['name']} + {cfgs[0]['optimizer']['name']} failed: {type(e).__name__}: {e}")

        tic = time.perf_counter()
        one(firsts[0])  # loads the data set once, in this thread
        workers = max(1, min(len(firsts) - 1, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, firsts[1:]))
        log.info(f"compiled the first population of {len(firsts)} structures in {time.perf_counter() - tic:.1f} s ({workers} threads)")
