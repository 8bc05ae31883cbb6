"""The `grid` sweeper: expands per-option grids, validates every job up front, launches, reports.

    python -m cl_sweep --multirun +sweep=a6 activation=hard_ash optimizer=rmsprop    # 6 × 25 = 150 jobs

Command-line sweeps (``seed=0,5``, ``activation=glob(*)``, ``activation.k=64,96``) multiply as in
Hydra's basic sweeper; for each chosen group option, the option's grid from ``grid`` is added,
except for keys the command line already sets (the command line wins). Jobs whose result is
already complete are skipped by the task itself, so re-running the same command resumes.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from cl_sweep.progress import sweep_progress

log = logging.getLogger(__name__)


def format_value(value: Any) -> str:
    """A Hydra override value that parses back to the same value and type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def expand_grid(
    combos: Iterable[list[str]], grid: dict[str, dict[str, dict[str, list]]]
) -> list[list[str]]:
    """Adds each combo's per-option grid: ``[[group=opt, ...]] -> [[group=opt, group.key=v, ...], ...]``.

    A combo choosing an option that the grid does not list for its group is left out (the grid
    defines which options belong to it: A.6 has no Elephant); list an option with ``{}`` to
    include it with no hyperparameters to vary.
    """
    jobs = []
    for combo in combos:
        keys_set = {o.split("=", 1)[0] for o in combo}
        choices = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in combo}
        if any(group in choices and choices[group] not in per_option for group, per_option in grid.items()):
            continue
        axes: list[list[str]] = []
        for group, per_option in grid.items():
            option = choices.get(group)
            if option is None:
                continue
            for key, values in (per_option.get(option) or {}).items():
                full = f"{group}.{key}"
                if full in keys_set:
                    continue
                if not isinstance(values, (list, tuple)):
                    values = [values]
                axes.append([f"{full}={format_value(v)}" for v in values])
        for point in itertools.product(*axes):
            jobs.append(list(combo) + list(point))
    return jobs


class GridSweeper(Sweeper):
    """Grid search over per-option grids, resumable, with every job checked before any starts."""

    def __init__(
        self, grid: dict | DictConfig | None = None, max_batch_size: int | None = None,
        validate: bool = True, dry_run: bool = False, stride: int = 1,
    ):
        if stride < 1:
            raise ValueError(f"hydra.sweeper.stride={stride} is not allowed; it must be >= 1 (1 = every job)")
        self.stride = stride
        self.grid = OmegaConf.to_container(grid, resolve=True) if isinstance(grid, DictConfig) else dict(grid or {})
        self.max_batch_size = max_batch_size
        self.validate = validate
        self.dry_run = dry_run
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def job_overrides(self, arguments: list[str]) -> list[list[str]]:
        """Every job's override list, in a stable order."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        lists: "OrderedDict[str, list[str]]" = OrderedDict()
        for override in parser.parse_overrides(arguments):
            key = override.get_key_element()
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    raise ValueError(
                        f"the grid sweeper takes lists, choice(), range() and glob() only; {key} is a "
                        f"{override.value_type.name} sweep (use hydra/sweeper=optuna for intervals)"
                    )
                lists[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
            else:
                lists[key] = [f"{key}={override.get_value_element_as_str()}"]
        # A group left at its default still takes its grid: add it explicitly.
        for group in self.grid:
            if group not in lists and not any(k.startswith(group + ".") or k == group for k in lists):
                default = self.config.hydra.runtime.choices.get(group) if self.config is not None else None
                if default is not None:
                    lists[group] = [f"{group}={default}"]
        combos = [list(c) for c in itertools.product(*lists.values())]
        for group, per_option in self.grid.items():
            chosen = {o.split("=", 1)[1] for o in lists.get(group, [])}
            outside = sorted(chosen - set(per_option))
            if outside:
                log.warning(f"{group} options not in this grid, skipped: {', '.join(outside)}")
        return expand_grid(combos, self.grid)

    def _validate_all(self, jobs: Sequence[Sequence[str]]) -> None:
        """Composes every job and runs the trainer's value checks; the first bad job stops the sweep."""
        from cl_sweep.config import ConfigError, validate

        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        for overrides in jobs:
            cfg = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            try:
                validate(cfg)
            except ConfigError as e:
                raise SystemExit(f"cl_sweep: job {' '.join(overrides)}: {e} (no job of this sweep was started)") from None

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        jobs = self.job_overrides(arguments)[:: self.stride]
        if self.dry_run:
            for overrides in jobs:
                print(" ".join(overrides))
            print(f"{len(jobs)} jobs (dry run: nothing launched)")
            return []
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(f"grid sweep: {len(jobs)} jobs into {sweep_dir}")
        if self.validate and not getattr(self.launcher, "validates_jobs", False):
            tic = time.perf_counter()
            self._validate_all(jobs)
            log.info(f"validated {len(jobs)} job configs in {time.perf_counter() - tic:.1f} s")

        size = self.max_batch_size or len(jobs) or 1
        returns, failed, values = [], [], []
        with sweep_progress(len(jobs), self.config) as bar:  # a population launcher reports to it as it goes
            for start in range(0, len(jobs), size):
                batch = jobs[start : start + size]
                results = self.launcher.launch(batch, initial_job_idx=start)
                for overrides, r in zip(batch, results):
                    bar.report(r)
                    try:
                        values.append((float(r.return_value), overrides))
                    except Exception as e:  # a crashed job is reported, the sweep goes on
                        failed.append((overrides, f"{type(e).__name__}: {e}"))
                returns.append(results)

        finite = [(v, o) for v, o in values if v is not None and math.isfinite(v)]
        diverged = len(values) - len(finite)
        log.info(f"grid sweep done: {len(finite)} ok, {diverged} diverged, {len(failed)} failed, of {len(jobs)} jobs")
        if finite:
            best, best_overrides = max(finite, key=lambda t: t[0])
            log.info(f"best final_accuracy_mean {best:.4f}: {' '.join(best_overrides)}")
        for overrides, reason in failed:
            log.error(f"job failed: {' '.join(overrides)}: {reason}")
        if failed:
            raise SystemExit(f"cl_sweep: {len(failed)} of {len(jobs)} jobs failed (listed above); re-run the same command to retry them")
        return returns

