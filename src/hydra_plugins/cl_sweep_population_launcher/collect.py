"""Collects a sweep's jobs for the population launchers: the finished ones' results, the others' configs and folders.

Most jobs take `SweepComposer.plain_job`: no ``DictConfig`` and no Hydra ``run_job`` per job, and a
job whose folder already holds its complete result (`cl_sweep.results.is_complete`: the same job
identity) is neither composed nor validated again. The rest (a group's first job, anything
`plain_job` cannot tell) go through Hydra's own ``run_job`` as before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

from hydra.core.utils import JobReturn, JobRuntime, JobStatus, run_job
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict

from ._compose import SweepComposer

log = logging.getLogger(__name__)


class Pending:
    """What the collector learned about one job that still has to train."""

    def __init__(self, cfg: dict, overrides: list[str], output_dir: str, done: Optional[dict], reporter: Any = None):
        self.cfg, self.overrides, self.output_dir, self.done = cfg, overrides, output_dir, done
        self.reporter = reporter  # the sweeper's pruning link of this job (`cl_sweep.cli.task_reporter`), or None


class Collected(NamedTuple):
    returns: list[JobReturn]  # one per job; a pending job's return value is its `Pending`
    pending: list[tuple[int, Pending]]  # (position in the batch, job) of the jobs to train
    n_done: int  # jobs already complete, not re-run
    composer: SweepComposer  # its hits and misses say how the configs were made


def _collect(cfg: DictConfig) -> Pending:
    """Stand-in task function: records the job's resolved config and folder, trains nothing."""
    from hydra.core.hydra_config import HydraConfig

    from cl_sweep.cli import completed, task_reporter

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    plain = OmegaConf.to_container(cfg, resolve=True)
    done = completed(hc.runtime.output_dir, overrides, plain)
    return Pending(plain, overrides, hc.runtime.output_dir, done, None if done is not None else task_reporter())


def _sweeper_reports(config: DictConfig) -> bool:
    """Whether the sweeper links each job to its pruner (`cl_sweep.cli.task_reporter`): that needs
    the job's Hydra context, so those jobs take Hydra's path."""
    target = OmegaConf.select(config, "hydra.sweeper._target_", default=None)
    if not target:
        return False
    from hydra.utils import get_class

    try:
        return getattr(get_class(str(target)), "job_reporter", None) is not None
    except Exception:  # a sweeper we cannot import offers no reporter (as task_reporter says)
        return False


def collect_jobs(config: DictConfig, hydra_context: HydraContext, job_overrides: Sequence[Sequence[str]],
                 initial_job_idx: int = 0) -> Collected:
    """Every job's `JobReturn` (COMPLETED with its objective where its result is complete), and
    the jobs still to train with the config Hydra would give them. Every job to train is validated
    first: a bad one stops the batch (``SystemExit``, one paragraph) before anything trains."""
    from cl_sweep.config import ConfigError, validate
    from cl_sweep.progress import report
    from cl_sweep.results import is_complete
    from cl_sweep.training.train import objective

    def refuse(overrides: Sequence[str], e: ConfigError) -> None:
        which = "sweep" if initial_job_idx == 0 else "batch"
        raise SystemExit(f"cl_sweep: job {' '.join(overrides)}: {e} (no job of this {which} was started)") from None

    composer = SweepComposer(hydra_context.config_loader, config)
    reports = _sweeper_reports(config)
    cwd, task_name = os.getcwd(), JobRuntime.instance().get("name")
    returns: list[JobReturn] = []
    pending: list[tuple[int, Pending]] = []
    n_done = 0
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        sweep_config = None
        job = composer.plain_job(overrides, idx)
        if job is None:
            learned = composer.misses + composer.factored
            sweep_config = composer.compose(list(overrides))
            if composer.misses + composer.factored > learned:  # its group is known now
                job = composer.plain_job(overrides, idx)
        if job is not None:
            done = is_complete(job.output_dir, job.overrides) if job.cfg.get("skip_completed", True) else None
            if done is not None:
                returns.append(JobReturn(overrides=job.overrides, working_dir=cwd, task_name=task_name,
                                         status=JobStatus.COMPLETED, _return_value=objective(done, trained=False)))
                report(returns[-1])
                n_done += 1
                log.debug(f"\t#{idx} already complete, not re-run: {job.output_dir}")
                continue
            if not reports:
                try:
                    validate(job.cfg)
                except ConfigError as e:
                    refuse(overrides, e)
                Path(job.output_dir).mkdir(parents=True, exist_ok=True)
                p = Pending(job.cfg, job.overrides, job.output_dir, None)
                returns.append(JobReturn(overrides=job.overrides, working_dir=cwd, task_name=task_name,
                                         status=JobStatus.COMPLETED, _return_value=p))
                pending.append((i, p))
                continue
        # Hydra's own path: the job's config composed and run under Hydra's job context
        if sweep_config is None:
            sweep_config = composer.compose(list(overrides))
        try:
            validate(sweep_config)
        except ConfigError as e:
            refuse(overrides, e)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        ret = run_job(
            hydra_context=hydra_context, task_function=_collect, config=sweep_config,
            job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir",
        )
        returns.append(ret)
        if ret.status == JobStatus.COMPLETED:
            p = ret.return_value
            if p.done is not None:
                ret.return_value = objective(p.done, trained=False)
                report(ret)
                n_done += 1
                log.debug(f"\t#{idx} already complete, not re-run: {p.output_dir}")
            else:
                pending.append((i, p))
        else:
            report(ret)
    return Collected(returns, pending, n_done, composer)
