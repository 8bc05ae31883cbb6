"""Experiment tracking: the `logger` group's trackers, one run per (grid point, seed), fed at task boundaries.

A tracker is what a registered logger function returns (`cl_sweep.register_logger`); it is built
once before anything trains (so one that cannot start stops the job there, or with
``logger.on_error=warn`` is left out with one warning), then hears, on the host, what the engine
already reports after every task (`cl_sweep.training.engine.TaskEnd`): no device sync is added
and no trained number changes. ``logger=none`` (the default) imports no tracker package.

Steps are 1-based task counts: step t is logged after the t-th task. A job with ``eval_every``
logs at optimizer steps instead (over all tasks), so that its learning curve (``curve/...``, at
each evaluation point inside a task) and the per-task metrics share one increasing axis.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["RunInfo", "Tracker", "TrackerError", "Tracking", "curve_metrics", "task_metrics"]


class TrackerError(ValueError):
    """A tracker that cannot start (missing package, bad URI, no network); its message is one paragraph."""


@dataclass(frozen=True)
class RunInfo:
    """One run: one seed of one grid point (job) of one sweep."""

    sweep: str  # the sweep's folder (a single run: the job's folder); W&B job_type, an MLflow tag
    grid_point: str  # the job's folder; W&B group, MLflow parent run
    name: str  # "<grid point label>-seed<seed>"
    seed: int
    job_dir: Path
    relative: Path  # "<sweep folder name>/<job folder name>": where a tracker with its own save_dir puts the job
    params: Mapping[str, Any]  # the job's hyperparameters (`hyperparameters_of`) and its seed
    tags: Mapping[str, str]  # git revision, versions, benchmark, activation, optimizer, model, overrides
    num_tasks: int = 0
    eval_every: int | None = None  # the job's learning-curve interval: it logs at optimizer steps (see above)


class Tracker(Protocol):
    """What a registered logger function returns. Each method is called on the host only."""

    def start(self, run: RunInfo) -> Any:
        """Opens the run (params and tags logged); returns the handle the other calls get."""

    def log(self, handle: Any, step: int, metrics: Mapping[str, float]) -> None:
        """The metrics after task ``step`` (1-based)."""

    def end(self, handle: Any, summary: Mapping[str, float], heatmap: Path | None, status: str) -> None:
        """Closes the run: final metrics, the accuracy-matrix heatmap (PNG), status finished/pruned/failed."""

    def close(self) -> None:
        """After every run of the process has ended."""


def task_metrics(matrix: np.ndarray, task: int, overall: float, active: float, diverged: bool,
                 train_loss: float | None = None) -> dict[str, float]:
    """What one seed logs after ``task`` (0-based) from its accuracy matrix rows up to ``task``;
    ``train_loss`` is the task's mean training loss (None or NaN, e.g. FlyModel's: not logged)."""
    from cl_sweep.analysis import metrics

    seen = matrix[: task + 1]
    out = {
        "test_accuracy": overall,
        "average_accuracy": metrics.average_accuracy(seen.tolist())[task],
        "forgetting": metrics.forgetting(seen.tolist()),
        "backward_transfer": metrics.backward_transfer(seen.tolist()),
        "active_fraction": active,
        "diverged": float(diverged),
        "train_loss": train_loss,
    }
    out.update({f"accuracy/task_{j + 1}": matrix[task, j] for j in range(task + 1)})
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def curve_metrics(overall: float, per_task: np.ndarray, task: int) -> dict[str, float]:
    """What one seed logs at an evaluation point inside ``task`` (0-based): the test accuracy and
    the tasks seen so far, under ``curve/`` (the per-task metrics keep their names)."""
    out = {"curve/test_accuracy": overall, **{f"curve/accuracy/task_{j + 1}": per_task[j] for j in range(task + 1)}}
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def _paragraph(name: str, error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, ImportError):
        text = (f"its package is not installed ({text}); install the trackers with "
                f"`pip install -e '.[trackers]'` (or the package itself)")
    return f"logger={name} cannot start: {text}"


def _nodes(logger: Mapping) -> list[tuple[str, dict]]:
    """The (name, keys) of each tracker a job's ``logger`` node asks for (``many``: each of its ``loggers``)."""
    logger = dict(logger or {"name": "none"})
    name = logger.pop("name", "none")
    if name == "many":
        on_error = logger.get("on_error", "fail")
        return [(n, {"on_error": on_error, **dict(logger.get(n) or {})}) for n in logger.get("loggers") or ()]
    return [] if name == "none" else [(name, logger)]


class Tracking:
    """The trackers of a set of jobs, started before training; `session` feeds them from `train_jobs`."""

    def __init__(self) -> None:
        self._trackers: dict[str, tuple[str, Any]] = {}  # key of (name, keys) -> (name, tracker)
        self._broken: set[str] = set()  # trackers that failed while logging: left out from then on

    @classmethod
    def open(cls, cfgs: Sequence[Mapping]) -> "Tracking":
        """Starts every tracker the jobs' ``logger`` nodes ask for; raises `TrackerError` (one paragraph)
        for one that cannot start, unless its ``on_error`` is ``warn`` (then one warning, left out)."""
        from cl_sweep.components.registry import LOGGERS

        tracking = cls()
        for cfg in cfgs:
            for name, keys in _nodes(cfg.get("logger")):
                key = json.dumps([name, keys], sort_keys=True, default=str)
                if key in tracking._trackers:
                    continue
                on_error = keys.get("on_error", "fail")
                try:
                    component = LOGGERS.lookup(name)
                    tracker = component.call(**{k: v for k, v in keys.items() if k != "name"})
                except Exception as e:  # noqa: BLE001 - any failure to start is the user's to see in one paragraph
                    message = _paragraph(name, e)
                    if on_error == "warn":
                        _warn(f"{message}. logger.on_error=warn: training goes on without it.")
                        tracking._trackers[key] = (name, None)
                        continue
                    tracking.close()
                    raise TrackerError(
                        f"{message}. Nothing was trained. Fix the logger's keys, or pass logger.on_error=warn to "
                        f"train without it (or logger=none)."
                    ) from None
                tracking._trackers[key] = (name, tracker)
        return tracking

    def trackers_of(self, cfg: Mapping) -> list[tuple[str, str, Any]]:
        out = []
        for name, keys in _nodes(cfg.get("logger")):
            key = json.dumps([name, keys], sort_keys=True, default=str)
            tracker = self._trackers.get(key, (name, None))[1]
            if tracker is not None:
                out.append((key, name, tracker))
        return out

    def session(self, cfgs: Sequence[Mapping], overrides: Sequence[Sequence[str]], output_dirs: Sequence[str | Path],
                sweep_dir: str | Path | None = None) -> "Session | None":
        """The listener of one `train_jobs` call (None when no job of it logs anywhere)."""
        if not any(self.trackers_of(c) for c in cfgs):
            return None
        return Session(self, cfgs, overrides, output_dirs, sweep_dir)

    def call(self, key: str, name: str, what: str, fn: Callable, *args: Any) -> Any:
        """Runs a tracker's call; one that fails is reported once and left out (training goes on)."""
        if key in self._broken:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - a tracker never stops training or loses result.json
            self._broken.add(key)
            _warn(f"logger={name} failed while {what} ({type(e).__name__}: {e}); it logs nothing more in this "
                  f"process. Training goes on and result.json is written as usual.")
            return None

    def close(self) -> None:
        for key, (name, tracker) in self._trackers.items():
            if tracker is not None:
                self.call(key, name, "closing", tracker.close)
        self._trackers.clear()


def _warn(message: str) -> None:
    print(f"cl_sweep: warning: {message}", file=sys.stderr)
    log.warning(message)


def _label(job_dir: Path, sweep_dir: Path) -> str:
    return job_dir.name if job_dir != sweep_dir else sweep_dir.name


class Session:
    """Listener of one `train_jobs` call: starts a run at a (job, seed)'s first task, logs every task,
    ends it at the last (or, pruned/failed, in `finish`)."""

    def __init__(self, tracking: Tracking, cfgs, overrides, output_dirs, sweep_dir) -> None:
        from cl_sweep.results import source_revision
        from cl_sweep.training.train import activation_of, benchmark_of, hyperparameters_of, model_name, optimizer_of

        import jax
        import jaxlib

        from cl_sweep import __version__

        self.tracking = tracking
        self._tmp = tempfile.TemporaryDirectory(prefix="cl_sweep_tracking_")
        self.jobs = []
        for cfg, ov, d in zip(cfgs, overrides, output_dirs):
            job_dir = Path(d)
            sweep = Path(sweep_dir) if sweep_dir is not None else job_dir
            params = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                      for k, v in hyperparameters_of(cfg).items()}
            tags = {
                "git": source_revision() or "unknown", "cl_sweep": __version__, "jax": jax.__version__,
                "jaxlib": jaxlib.__version__, "benchmark": benchmark_of(cfg), "activation": activation_of(cfg),
                "optimizer": optimizer_of(cfg), "model": model_name(cfg), "sweep": str(sweep),
                "grid_point": str(job_dir), "overrides": " ".join(ov) or "(none)",
            }
            if cfg.get("tag"):
                tags["tag"] = str(cfg["tag"])
            relative = Path(sweep.name) / job_dir.name if job_dir != sweep else Path(sweep.name)
            self.jobs.append((tracking.trackers_of(cfg), str(sweep), str(job_dir), _label(job_dir, sweep),
                              job_dir, relative, params, tags, cfg.get("eval_every")))
        self._runs: dict[tuple[int, int], list[tuple[str, str, Any, Any]]] = {}
        self._last: dict[tuple[int, int], tuple[np.ndarray, float, bool, int]] = {}

    def _start(self, job: int, seed: int, num_tasks: int) -> list:
        trackers, sweep, point, label, job_dir, relative, params, tags, eval_every = self.jobs[job]
        run = RunInfo(sweep=sweep, grid_point=point, name=f"{label}-seed{seed}", seed=seed, job_dir=job_dir,
                      relative=relative, params={**params, "seed": seed}, tags=tags, num_tasks=num_tasks,
                      eval_every=eval_every)
        handles = []
        for key, name, tracker in trackers:
            handle = self.tracking.call(key, name, f"starting run {run.name}", tracker.start, run)
            if key not in self.tracking._broken:
                handles.append((key, name, tracker, handle))
        return handles

    def __call__(self, job: int, event) -> None:
        for i, seed in enumerate(event.seeds):
            if event.stopped is not None and event.stopped[i]:
                continue
            pair = (job, int(seed))
            if pair not in self._runs:
                self._runs[pair] = self._start(job, int(seed), event.num_tasks)
            matrix = event.accuracy_matrix[i]
            loss = None if event.train_loss is None else event.train_loss[i, event.task]
            values = task_metrics(matrix, event.task, event.overall_accuracy[i, event.task],
                                  event.active_fraction[i, event.task], bool(event.diverged[i]), loss)
            step = self._step(job, event.task + 1, event.global_step)
            if step != event.task + 1:
                values["task"] = float(event.task + 1)
            for key, name, tracker, handle in self._runs[pair]:
                self.tracking.call(key, name, "logging", tracker.log, handle, step, values)
            self._last[pair] = (matrix.copy(), float(event.overall_accuracy[i, event.task]), bool(event.diverged[i]),
                                event.task + 1, step)
            if event.task == event.num_tasks - 1:
                self._end(pair, "finished")
        return None  # a tracker never prunes

    def _step(self, job: int, tasks: int, global_step: int) -> int:
        """The step axis of a job's logs: task counts, or optimizer steps with ``eval_every``."""
        return global_step if self.jobs[job][8] else tasks

    def on_eval(self, job: int, event) -> None:
        """An evaluation point inside a task (``eval_every``): the seeds' curve at that optimizer step."""
        for i, seed in enumerate(event.seeds):
            pair = (job, int(seed))
            if not math.isfinite(event.overall_accuracy[i]):  # stopped earlier
                continue
            if pair not in self._runs:
                self._runs[pair] = self._start(job, int(seed), event.num_tasks)
            values = curve_metrics(event.overall_accuracy[i], event.per_task[i], event.task)
            for key, name, tracker, handle in self._runs[pair]:
                self.tracking.call(key, name, "logging", tracker.log, handle, event.step, values)

    def _end(self, pair: tuple[int, int], status: str) -> None:
        from cl_sweep.analysis import metrics
        from cl_sweep.analysis.plots import accuracy_matrix_heatmaps

        handles = self._runs.pop(pair, [])
        if not handles:
            return
        matrix, final, diverged, trained, step = self._last.get(pair, (np.full((1, 1), np.nan), math.nan, False, 0, 0))
        rows = matrix[:trained].tolist()
        summary = {"tasks_trained": float(trained), "diverged": float(diverged)}
        if step != trained:  # logged at optimizer steps (eval_every): the last one, where the final values go
            summary["step"] = float(step)
        if status == "finished" and not diverged:
            summary["final_accuracy"] = final
        for k, v in (("average_accuracy", (metrics.average_accuracy(rows) or [None])[-1]),
                     ("forgetting", metrics.forgetting(rows)), ("backward_transfer", metrics.backward_transfer(rows))):
            if v is not None and math.isfinite(v):
                summary[k] = float(v)
        label = self.jobs[pair[0]][3]
        heatmap = None
        if trained:
            heatmap = Path(self._tmp.name) / f"{label}-seed{pair[1]}" / "accuracy_matrix.png"
            accuracy_matrix_heatmaps([(f"{label}, seed {pair[1]}", matrix)], heatmap)
        for key, name, tracker, handle in handles:
            self.tracking.call(key, name, "ending a run", tracker.end, handle, summary, heatmap, status)

    def finish(self, failed: bool = False) -> None:
        """Ends every run still open: its job was pruned (or stopped early), or training failed."""
        for pair in list(self._runs):
            self._end(pair, "failed" if failed else "pruned")
        self._tmp.cleanup()
