"""Sharded population sweeps: the `population` launcher's work cut into shards, one process (one GPU or
CPU node) each, through submitit (`population_submitit_local`, `population_slurm`) or Ray (`population_ray`).

The sweep is collected once, here, by the population launcher's own `collect` (job folders, Hydra
files, skipping complete jobs); its groups are cut into the batches the population launcher would
train (`_per_batch` jobs each, `cl_sweep.training.train.jobs_per_batch`), and the batches, in the
population launcher's order, into ``shards`` contiguous runs of about equal models x steps. A group
is split only between two of its batches, so every call is one the population launcher makes: the
same populations, hence the same bits on the same hardware, and a structure is compiled again only
where a cut falls inside it (at most shards - 1 times in all). More shards than batches left to
train (a resumed sweep) runs one shard per batch; a batch is never split (its calls are filled
across its jobs).

Each shard trains with `PopulationLauncher.train`, so each job writes its result.json as soon as its
last model has trained: a killed shard loses its jobs in flight only, and re-running the same
command trains exactly the jobs without a complete result (`collect` skips the others).
"""

import copy
import logging
import os
import sys
import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import DictConfig, OmegaConf, open_dict

from cl_sweep.progress import report, sweep_progress

from .collect import Pending
from .population_launcher import PopulationLauncher

log = logging.getLogger(__name__)

# Examples per task counted for `benchmark.limit_per_task=null` (all of a task) when weighing shards:
# about one split-MNIST task. Only the ratio between jobs matters, and a sweep rarely mixes both.
_FULL_TASK = 12_000


@dataclass
class Shard:
    """One shard's work, pickled to its process: ``groups`` as `PopulationLauncher.train` takes them."""

    number: int  # 1-based
    of: int
    groups: dict  # {group ordinal: [(job index, Pending), ...]}
    config: DictConfig  # the sweep's config (hydra.sweep.dir resolved)
    max_population: int
    precompile: Optional[bool]
    # The jobs' cpu_threads; null: XLA's default, all CPUs the process may use (SLURM: its allocation).
    # The count can change the last bits of reductions (active_fraction), so null keeps the local
    # population launcher's bits; several local shards on one machine then share its cores.
    threads: Optional[int]

    @property
    def jobs(self) -> list[tuple[int, Pending]]:
        return [job for jobs in self.groups.values() for job in jobs]


def cost(cfg: dict) -> float:
    """Models x steps of one job: its seeds x optimizer steps (all tasks the same length)."""
    bench = cfg["benchmark"]
    per_task = bench.get("limit_per_task") or _FULL_TASK
    return cfg["n_seeds"] * bench.get("epochs_per_task", 1) * -(-per_task // bench["batch_size"])


def cut(costs: Sequence[float], n: int) -> list[int]:
    """Boundaries of ``n`` contiguous non-empty runs of ``costs`` with sums as equal as the items allow:
    run k is ``costs[b[k]:b[k + 1]]``, each boundary the one nearest to k/n of the total."""
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    bounds = [0]
    for k in range(1, n):
        target = prefix[-1] * k / n
        lo, hi = bounds[-1] + 1, len(costs) - (n - k)
        bounds.append(min(range(lo, hi + 1), key=lambda j: (abs(prefix[j] - target), j)))
    return bounds + [len(costs)]


def spans(numbers: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``: a shard's job numbers in one short line."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def bad_shards(shards: Any, n_jobs: int, batch: bool) -> Optional[str]:
    """The paragraph refusing ``hydra.launcher.shards``, or None when it is allowed."""
    if isinstance(shards, int) and not isinstance(shards, bool) and 1 <= shards <= n_jobs:
        return None
    which = "this batch of the sweep" if batch else "this sweep"
    return (
        f"cl_sweep: hydra.launcher.shards={shards} is not allowed: it must be a whole number from 1 to {n_jobs}, "
        f"the number of jobs in {which} (each shard is one process training at least one job; 1 trains them all "
        "in one process). Fix the override and run again: nothing was trained."
    )


class ShardedLauncher(PopulationLauncher):
    """Collects and plans here; `_run` (one subclass per backend) trains the shards elsewhere."""

    def __init__(self, shards: int = 1, max_population: Optional[int] = None, precompile: Optional[bool] = None) -> None:
        super().__init__(max_population=max_population, precompile=precompile)
        self.shards = shards

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        refusal = bad_shards(self.shards, len(job_overrides), batch=initial_job_idx > 0)
        if refusal:
            print(refusal, file=sys.stderr)
            raise SystemExit(2)
        with sweep_progress(len(job_overrides), self.config):  # counts each shard's jobs when it ends
            return self._launch_shards(job_overrides, initial_job_idx)

    def _launch_shards(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        returns, groups = self.collect(job_overrides, initial_job_idx)
        if not groups:
            return returns
        if any(p.reporter is not None for jobs in groups.values() for _, p in jobs):
            log.warning("the sharded launchers do not prune: the sweeper's pruner is not asked (hydra/launcher=population prunes)")
        plan = self.plan(groups)
        for shard in plan:
            jobs = shard.jobs
            log.info(
                f"shard {shard.number}/{shard.of}: {len(jobs)} jobs of {len(shard.groups)} structures, "
                f"{sum(cost(p.cfg) for _, p in jobs):.0f} model-steps (jobs {spans([i + initial_job_idx for i, _ in jobs])})"
            )
        tic = time.perf_counter()
        for shard, outcome in zip(plan, self._run(plan)):
            self._report(shard, outcome, returns)
        log.info(f"{len(plan)} shards done in {time.perf_counter() - tic:.1f} s")
        return returns

    def plan(self, groups: dict) -> list[Shard]:
        """The groups' batches cut into shards (see the module's docstring)."""
        calls = []  # (group ordinal, jobs of one batch)
        for g, jobs in enumerate(groups.values()):
            per_batch = self._per_batch(jobs[0][1].cfg)
            calls += [(g, jobs[lo : lo + per_batch]) for lo in range(0, len(jobs), per_batch)]
        n = min(self.shards, len(calls))
        if n < self.shards:
            log.info(f"hydra.launcher.shards={self.shards}, but only {len(calls)} batches of jobs are left to train: {n} shard(s)")
        bounds = cut([sum(cost(p.cfg) for _, p in jobs) for _, jobs in calls], n)
        config = copy.deepcopy(self.config)
        with open_dict(config):  # the shard's process must not resolve it again (${now:...})
            config.hydra.sweep.dir = str(Path(str(self.config.hydra.sweep.dir)).resolve())
        shards = []
        for k in range(n):
            part: dict[int, list] = {}
            for g, jobs in calls[bounds[k] : bounds[k + 1]]:
                # the reporter (pruning link) stays here: it holds a live study
                part.setdefault(g, []).extend((i, Pending(p.cfg, p.overrides, p.output_dir, None)) for i, p in jobs)
            threads = next(iter(part.values()))[0][1].cfg.get("cpu_threads")
            shards.append(Shard(k + 1, n, part, config, self.max_population, self.precompile, threads))
        return shards

    @abstractmethod
    def _run(self, shards: list[Shard]) -> list[Any]:
        """Trains the shards; per shard its `train_shard` list, or the exception that ended it."""

    def _report(self, shard: Shard, outcome: Any, returns: list[JobReturn]) -> None:
        """Fills the shard's JobReturns; the jobs of a shard that died are complete if their result is."""
        from cl_sweep.cli import summary
        from cl_sweep.results import RESULT_FILENAME, is_complete
        from cl_sweep.training.train import objective

        if isinstance(outcome, BaseException):
            lost = []
            for i, p in shard.jobs:
                done = is_complete(p.output_dir, p.overrides)
                if done is None:
                    lost.append(i)
                    returns[i].status = JobStatus.FAILED
                    returns[i]._return_value = RuntimeError(f"shard {shard.number}/{shard.of} ended before this job finished: {outcome}")
                else:
                    returns[i].return_value = objective(done)
                report(returns[i])
            log.error(
                f"shard {shard.number}/{shard.of} ended early ({type(outcome).__name__}: {str(outcome).strip()[:300]}): "
                f"{len(shard.jobs) - len(lost)} of its {len(shard.jobs)} jobs finished and are kept; "
                "re-running the same command trains the others"
            )
            return
        pending = dict(shard.jobs)
        for i, status, value in outcome:
            if status == "ok":
                p = pending[i]
                result = is_complete(p.output_dir)
                returns[i].return_value = value
                if result is not None:
                    line = summary(result, Path(p.output_dir) / RESULT_FILENAME).splitlines()[1]
                    print(f"{line}  [{', '.join(filter_overrides(p.overrides))}]")
            else:
                returns[i].status = JobStatus.FAILED
                returns[i]._return_value = RuntimeError(value)
            report(returns[i])


def train_shard(shard: Shard) -> list[tuple[int, str, Any]]:
    """In the shard's process: trains its populations as the population launcher does; per job
    (index, "ok", objective) or (index, "failed", reason)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if shard.threads is not None:
        from cl_sweep.cli import apply_cpu_threads

        apply_cpu_threads(shard.threads)  # before anything starts XLA
    log.info(f"shard {shard.number}/{shard.of}: {len(shard.jobs)} jobs, pid {os.getpid()}")
    launcher = PopulationLauncher(max_population=shard.max_population, precompile=shard.precompile)
    launcher.config = shard.config
    returns = {i: JobReturn(status=JobStatus.COMPLETED) for i, _ in shard.jobs}
    with sweep_progress(len(returns), shard.config):  # the shard's own line in its log, no per-task bars
        launcher.train(shard.groups, returns)
    out = []
    for i, r in returns.items():
        if r.status == JobStatus.COMPLETED:
            out.append((i, "ok", r.return_value))
        else:
            e = r._return_value
            out.append((i, "failed", f"{type(e).__name__}: {e}"))
    return out


class SubmititShardedLauncher(ShardedLauncher):
    """Each shard one task of a submitit job array: local processes, or a SLURM array (`map_array`)."""

    _BASE = ("timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "nodes", "tasks_per_node")

    def __init__(self, cluster: str, submitit_folder: str, shards: int = 1, max_population: Optional[int] = None,
                 precompile: Optional[bool] = None, **params: Any) -> None:
        super().__init__(shards=shards, max_population=max_population, precompile=precompile)
        self.cluster, self.folder = cluster, submitit_folder
        self.visible_gpus = list(params.pop("visible_gpus", None) or [])
        self.params = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in params.items() if v is not None}

    def _local_executor(self, k: int) -> Any:
        """Shard k's local executor: the shard sees its own GPU of ``visible_gpus``, or this process's GPUs
        (submitit's local executor sets CUDA_VISIBLE_DEVICES to its own choice, none by default)."""
        gpus = self.visible_gpus
        devices = str(gpus[k % len(gpus)]) if gpus else os.environ.get("CUDA_VISIBLE_DEVICES")
        line = "unset CUDA_VISIBLE_DEVICES" if devices is None else f"export CUDA_VISIBLE_DEVICES={devices}"
        executor = self.executor()
        executor.update_parameters(local_setup=[line])
        return executor

    def executor(self) -> Any:
        """The submitit executor of the shards: one array task each (sbatch options from the config)."""
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        params = {k if k in self._BASE else f"{self.cluster}_{k}": v for k, v in self.params.items()}
        executor.update_parameters(name="cl_sweep_shard", **params)  # refuses a key the cluster lacks
        return executor

    def _run(self, shards: list[Shard]) -> list[Any]:
        if self.cluster == "local":
            jobs = [self._local_executor(k).submit(train_shard, shard) for k, shard in enumerate(shards)]
        else:
            jobs = self.executor().map_array(train_shard, shards)
        log.info(f"submitted {len(jobs)} shards as submitit {self.cluster} jobs {', '.join(j.job_id for j in jobs)}; logs in {self.folder}")
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(job.result())
            except Exception as e:  # killed, timed out or crashed: _report keeps what it wrote
                outcomes.append(e)
        return outcomes


class RayShardedLauncher(ShardedLauncher):
    """Each shard one Ray task (``num_cpus`` and ``num_gpus`` each) on the cluster at ``address``."""

    def __init__(self, address: Optional[str] = "auto", num_cpus: int = 1, num_gpus: Optional[float] = None,
                 shards: int = 1, max_population: Optional[int] = None, precompile: Optional[bool] = None) -> None:
        super().__init__(shards=shards, max_population=max_population, precompile=precompile)
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus

    def _run(self, shards: list[Shard]) -> list[Any]:
        try:
            import ray
        except ImportError:
            print("cl_sweep: hydra/launcher=population_ray needs Ray: pip install -e '.[ray]'. Nothing was trained.", file=sys.stderr)
            raise SystemExit(2) from None
        try:
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as e:
            print(f"cl_sweep: hydra.launcher.address={self.address}: no Ray cluster there ({e}). Start one "
                  "(`ray start --head`) or give its address. Nothing was trained.", file=sys.stderr)
            raise SystemExit(2) from None
        try:
            gpus = self.num_gpus
            if gpus is None:
                gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
            task = ray.remote(num_cpus=self.num_cpus, num_gpus=gpus, max_retries=0)(train_shard)
            refs = [task.remote(shard) for shard in shards]
            log.info(f"submitted {len(refs)} shards as Ray tasks ({self.num_cpus} CPUs, {gpus} GPUs each) to {self.address}")
            outcomes = []
            for ref in refs:
                try:
                    outcomes.append(ray.get(ref))
                except Exception as e:  # a worker killed or crashed: _report keeps what it wrote
                    outcomes.append(e)
            return outcomes
        finally:
            ray.shutdown()
