"""What one Hydra job does around training: validation, resume, result file, summary, clean errors."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from omegaconf import DictConfig

from cl_sweep.config import validate
from cl_sweep.results import RESULT_FILENAME, check_results_folder, is_complete, write_result

log = logging.getLogger(__name__)


# --- CPU threads per job (`cpu_threads`) ---------------------------------------------------------
# What bounds XLA's CPU threads in jax 0.10.2 (measured, see README "Parallel and cluster launchers"):
# the CPU client sizes its thread pools from the CPUs the process may run on (sched_getaffinity)
# when it starts. `--xla_cpu_multi_thread_eigen=false` only stops Eigen splitting one op; the
# runtime still runs independent ops on all CPUs, and `intra_op_parallelism_threads` is not an XLA
# flag (XLA aborts on it when XLA_FLAGS starts with it). So the job narrows its affinity to N CPUs
# while the client starts, then gives every thread the full set back: N XLA threads, which the OS
# may move to any CPU, so two workers never end up pinned to the same core.
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_threads_applied: int | None = None  # the count this process's XLA client was started with
_threads_warned = False


def launcher_cpu_threads() -> tuple[int | None, str]:
    """``cpu_threads=null``: the count the Hydra launcher of this multirun job implies, and why (else None)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return None, ""
        launcher = HydraConfig.get().launcher
    except Exception:  # not inside a Hydra job
        return None, ""
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        n_jobs = launcher.get("n_jobs") or 1
        workers = max(1, cpus + 1 + n_jobs if n_jobs < 0 else n_jobs)  # joblib's meaning of n_jobs
        return max(1, cpus // workers), f" (from the joblib launcher: {cpus} CPUs // n_jobs={n_jobs})"
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task), " (from hydra.launcher.cpus_per_task)"
    return None, ""


def _xla_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except Exception:  # private API moved: assume the worst
        return True


def apply_cpu_threads(n: int, why: str = "") -> None:
    """Starts this process's XLA CPU client with ``n`` threads and sets the BLAS/OpenMP thread variables.

    Must run before XLA starts in the process (a loky worker keeps it between jobs: the same
    count is a no-op, a different one warns once and keeps the first).
    """
    global _threads_applied, _threads_warned
    if n == _threads_applied:
        log.info(f"cpu_threads={n}{why}: already applied in this process (pid {os.getpid()})")
        return
    if _xla_started():
        if not _threads_warned:
            _threads_warned = True
            log.warning(
                f"cpu_threads={n}{why} not applied: XLA already started in this process (pid {os.getpid()}) "
                f"with {_threads_applied or 'its default number of'} threads; the thread count is fixed per process"
            )
        return
    for var in _THREAD_ENV:
        os.environ[var] = str(n)
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    import jax

    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else set()
    if n < len(allowed):
        os.sched_setaffinity(0, sorted(allowed)[:n])  # threads created from here on inherit it
        try:
            jax.devices()  # starts the clients: pools sized for n CPUs
        finally:
            for tid in os.listdir("/proc/self/task"):
                try:
                    os.sched_setaffinity(int(tid), allowed)
                except OSError:  # thread already gone
                    pass
    _threads_applied = n
    log.info(
        f"cpu_threads={n}{why}: XLA CPU client started with {n} thread(s) in pid {os.getpid()}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, OMP/MKL/OPENBLAS_NUM_THREADS={n}"
    )


def _error(message: str, code: int = 2) -> None:
    """Prints one paragraph to stderr and exits; SystemExit passes through Hydra without a traceback."""
    print(f"cl_sweep: {message}", file=sys.stderr)
    raise SystemExit(code)


def summary(result: dict, path: Path | None) -> str:
    """The human summary printed at the end of a job."""
    lines = [
        f"{result['benchmark']}  activation={result['activation']}  optimizer={result['optimizer']}  "
        f"seeds={result['seeds']}" + ("  (early-stopped)" if result["early_stopped"] else ""),
    ]
    if result["status"] == "ok":
        lines.append(
            f"final accuracy: {100 * result['final_accuracy_mean']:.1f} ± {100 * result['final_accuracy_std']:.1f} %"
            f"  (per seed: {', '.join(f'{100 * a:.1f}' for a in result['final_accuracy'])})"
        )
    elif result["status"] == "pruned":
        lines.append(
            f"PRUNED by the sweeper after {max(result['tasks_trained'])} of {len(result['accuracy_matrix'][0])} tasks "
            "(its trial is PRUNED; no final accuracy)"
        )
    else:
        n = sum(result["diverged"])
        lines.append(f"DIVERGED: {n} of {len(result['seeds'])} seeds: their loss or weights became non-finite (recorded as such)")
    held_out = [a for a in result.get("validation_accuracy") or () if a is not None]
    if held_out:
        lines.append(f"validation accuracy (held-out training examples): {100 * np.mean(held_out):.1f} ± {100 * np.std(held_out):.1f} %")
    ok = [m for m, d in zip(result["accuracy_matrix"], result["diverged"]) if not d]
    if ok:
        # None = not evaluated (permuted MNIST tracks only the first and the newest task)
        last = np.array([[np.nan if a is None else a for a in m[-1]] for m in ok], dtype=float).mean(axis=0)
        shown = [(j, a) for j, a in enumerate(last) if np.isfinite(a)]
        if shown:  # a pruned job has no row after the last task
            lines.append("per-task accuracy after the last task: " + "  ".join(f"T{j + 1} {100 * a:.1f}" for j, a in shown))
    lines.append(f"wall time: {result['wall_time_s']:.1f} s")
    if path is not None:
        lines.append(f"result: {path}")
    return "\n".join(lines)


def completed(output_dir: str | Path, overrides: Sequence[str], cfg) -> dict | None:
    """The stored result of a job already complete in ``output_dir`` for the same overrides (with
    ``skip_completed``), else None: such a job is not trained again."""
    return is_complete(Path(output_dir), list(overrides)) if cfg.get("skip_completed", True) else None


def task_reporter():
    """In a job of a sweep whose sweeper prunes: the callable that hears the job's task ends and
    says when to stop (``reporter(event) -> bool``), else None.

    Any sweeper can offer one: its class (``hydra.sweeper._target_``) has a static
    ``job_reporter(hydra_config)`` (cl_sweep's Optuna sweeper does). Called inside the job's
    Hydra context, in whatever process the launcher runs the job.
    """
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        target = hc.sweeper.get("_target_")
    except Exception:  # not inside a Hydra job
        return None
    if not target:
        return None
    from hydra.utils import get_class

    try:
        factory = getattr(get_class(str(target)), "job_reporter", None)
    except Exception:  # a sweeper we cannot import here offers nothing
        return None
    return factory(hc) if factory is not None else None


def pruning_listeners(reporters: Sequence) -> list:
    """The ``listeners`` of `run_jobs` for jobs with these reporters (None: that job reports nothing)."""
    if not any(r is not None for r in reporters):
        return []

    def listener(job: int, event) -> bool:
        reporter = reporters[job]
        return bool(reporter(event)) if reporter is not None else False

    return [listener]


def run_jobs(cfgs: Sequence, overrides: Sequence[Sequence[str]], output_dirs: Sequence[str | Path], *,
             max_population: int | None = None, desc: str = "", listeners: Sequence = (), tracking=None,
             sweep_dir: str | Path | None = None,
             on_written: Callable[[int, dict, Path], None] | None = None) -> list[tuple[dict, Path]]:
    """The one job path: trains jobs of one population together and writes each one's result.json
    into its folder as soon as that job's last model has trained (then calls
    ``on_written(job, result, path)``); returns (result, path) per job. A single job is a
    population of one (`run_job`); the population launcher calls this for each of its batches.
    ``listeners`` hear every task's end (`cl_sweep.training.train.train_jobs`).

    The jobs' ``logger`` trackers (`cl_sweep.tracking.Tracking`, opened by the caller before any
    training, else here) log one run per (job, seed) from the same task ends; ``sweep_dir``
    groups the runs of one sweep (default: each job's own folder). A tracker never stops the
    training nor the writing of result.json.
    """
    from cl_sweep.training.train import train_jobs
    from cl_sweep.tracking import Tracking

    own = tracking is None
    if own:
        tracking = Tracking.open(cfgs)  # TrackerError before anything trains
    if sweep_dir is None:
        sweep_dir = hydra_sweep_dir()
    session = tracking.session(cfgs, overrides, output_dirs, sweep_dir)
    listeners = [*listeners, session] if session is not None else list(listeners)
    failed = True
    try:
        written: dict[int, tuple[dict, Path]] = {}

        def write(j: int, result: dict) -> None:
            written[j] = (result, write_result(result, Path(output_dirs[j])))
            if on_written is not None:
                on_written(j, *written[j])

        train_jobs(list(cfgs), [list(o) for o in overrides], max_population=max_population, desc=desc,
                   listeners=listeners, on_result=write)
        failed = False
    finally:  # the runs end, marked failed when training or writing raised (Ctrl-C included)
        if session is not None:
            session.finish(failed=failed)
        if own:
            tracking.close()
    return [written[j] for j in range(len(cfgs))]


def hydra_sweep_dir() -> str | None:
    """Inside a multirun job: its sweep's folder (what groups the sweep's tracked runs), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return str(HydraConfig.get().sweep.dir)
    except Exception:  # not inside a Hydra job
        pass
    return None


def open_tracking(cfgs: Sequence):
    """The jobs' trackers, started before training: a tracker that cannot start is one paragraph
    (exit 2), or with ``logger.on_error=warn`` one warning."""
    from cl_sweep.tracking import Tracking, TrackerError

    try:
        return Tracking.open(cfgs)
    except TrackerError as e:
        _error(str(e))


def run_job(cfg: DictConfig, *, overrides: Sequence[str], output_dir: str) -> float:
    """Validates, skips a job already complete in ``output_dir``, trains, writes result.json, returns the metric."""
    from cl_sweep.data.datasets import DataUnavailableError
    from cl_sweep.data.tasks import TaskSplitError

    try:
        validate(cfg)  # imports the config's plugins first: a launcher's worker process has not seen them
        check_results_folder(output_dir, allow_dirty=bool(cfg.get("allow_dirty_results", False)))
    except ValueError as e:  # ConfigError included
        _error(str(e))
    threads, why = cfg.get("cpu_threads"), ""
    if threads is None:
        threads, why = launcher_cpu_threads()
    if threads is not None:
        apply_cpu_threads(threads, why)  # before cl_sweep.training.train imports jax
    from cl_sweep.training.train import objective

    done = completed(output_dir, overrides, cfg)
    if done is not None:
        print(f"already complete, not re-run: {Path(output_dir) / RESULT_FILENAME}", file=sys.stderr)
        return objective(done, trained=False)
    tracking = open_tracking([cfg])
    try:
        [(result, path)] = run_jobs([cfg], [overrides], [output_dir], listeners=pruning_listeners([task_reporter()]),
                                    tracking=tracking)
    except DataUnavailableError as e:
        _error(str(e), code=3)
    except TaskSplitError as e:  # e.g. a validation fraction that leaves a task nothing to train on
        _error(str(e))
    finally:
        tracking.close()
    print(summary(result, path))
    return objective(result)
