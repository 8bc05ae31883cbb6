"""The result file: one ``result.json`` per job, its schema, atomic writing, reading and validation.

This module is plain data on purpose: the aggregator, the notebooks and other tools read results
through it without importing JAX or the training engine.

Schema version 3 (every key is always present, except the optional keys marked opt.; version 1
files, written before the metrics below existed, are still read and have none of the keys marked
v2 or v3; version 2 files have none of the keys marked v3):

==========================  ==================================================================
key                         meaning
==========================  ==================================================================
``schema``                  3
``status``                  ``"ok"``, ``"diverged"`` (a seed's loss or weights became non-finite)
                            or ``"pruned"`` (a sweeper's pruner stopped it at a task boundary)
``benchmark``               benchmark name, e.g. ``"split_mnist"``
``activation``              activation name (registry key), e.g. ``"hard_ash"``
``optimizer``               optimizer name (registry key), e.g. ``"adagrad"``
``hyperparameters``         flat dict of the activation/optimizer/model/benchmark values that
                            define the grid point, e.g. ``{"activation.alpha": 3.0, ...}``
``config``                  the whole resolved job config
``overrides``               the command-line overrides that produced the job (list of str)
``seeds``                   the seeds actually trained (list of int)
``n_seeds_requested``       how many seeds the config asked for
``early_stopped``           true when the early-stop rule skipped the remaining seeds
``diverged``                per seed: true when its loss became NaN/inf
``final_accuracy``          per seed: overall test accuracy after the last task (0-1), or null
                            for a diverged seed
``final_accuracy_mean``     mean over the non-diverged seeds, null when status is "diverged"
``final_accuracy_std``      population std (ddof=0), same rule
``accuracy_matrix``         per seed, T x T: row i = per-task test accuracy after task i;
                            null where a task was not evaluated (permuted MNIST tracks only
                            the first and the newest task unless ``benchmark.full_matrix``)
``average_accuracy``  (v2)  per seed, after each task: mean accuracy over the tasks seen so far
``forgetting``        (v2)  per seed: mean over tasks of (best earlier accuracy - final accuracy);
                            null for one task or an incomplete matrix
``backward_transfer`` (v2)  per seed: mean over tasks of (final accuracy - accuracy right after
                            training it); null likewise
``active_fraction``   (v2)  per seed, after each task: the fraction of hidden units that are
                            non-zero, averaged over the test set (the measured sparsity)
``initial_accuracy``  (v3)  per seed, T values: per-task test accuracy of the untrained model
                            (the random-initialisation row), null where the last task's row
                            evaluates no such task (permuted MNIST without ``full_matrix``)
``forward_transfer``  (v3)  per seed: mean over tasks i >= 2 of (accuracy on task i after task
                            i-1) - (initial accuracy on task i) (GEM's FWT, Lopez-Paz & Ranzato
                            2017); null for one task or an entry not evaluated
``learning_accuracy`` (v3)  per seed: mean over tasks of the accuracy on each task right after
                            training it (the matrix diagonal); null for an incomplete diagonal
``class_accuracy``    (v3)  per seed, one value per class: test accuracy of the final model on
                            that class's examples (permuted MNIST: under the last task's
                            permutation); null for a diverged or pruned seed
``train_loss``        (v3)  per seed, per task: mean training loss over the task's steps (the
                            regulariser's penalty included); null where the model trains without
                            a loss (FlyModel), for a task not trained, or a non-finite loss
``peak_memory_mib``   (v3)  peak resident memory of the process that trained the job (MiB,
                            ``ru_maxrss``) when its training ended; jobs trained in one process
                            share it, so it bounds each of them
``time_per_model_s``  (v3)  seconds per model: the job's ``wall_time_s`` over the models it
                            trained (compilation and evaluation included)
``curve``             (v3)  (opt.) only with ``eval_every``: per seed, the test accuracy during
                            training as parallel lists ``step`` (optimizer steps over all tasks
                            so far), ``task`` (0-based task in training), ``accuracy`` (overall)
                            and ``task_accuracy`` (T values each, as a matrix row): before the
                            first step, every ``eval_every`` steps and after each task (a task
                            ends at its last point); null after a pruned seed stopped
``validation_accuracy``     (opt.) per seed: accuracy (0-1) on the held-out validation examples
                            of every task after the last task, null for a diverged seed; only
                            in jobs with ``benchmark.validation_fraction`` > 0 (absent otherwise)
``validation_accuracy_matrix``  (opt.) per seed, T x T, like ``accuracy_matrix`` on the
                            held-out validation examples; present with ``validation_accuracy``
``wall_time_s``             wall-clock seconds of the job (compilation included); in a population,
                            its share of the calls that trained its models (each call's time split
                            evenly among the call's models)
``versions``                versions of cl_sweep, jax and jaxlib that produced the file, and ``fast_paths``
                            (how it was trained: ``engine.fast_paths``; newer files only)
``created``                 UTC timestamp (ISO 8601)
==========================  ==================================================================

Optional keys of schema 2 (present only where they apply):

==========================  ==================================================================
``tasks_trained``           status ``"pruned"`` only, and there required: per seed, the tasks it
                            trained before the pruner stopped it (1 to T-1). Its accuracy matrix
                            has rows up to that task (null after); its ``final_accuracy`` and
                            the means are null (it never finished the last task); ``diverged``
                            may hold true (a diverged run is pruned like a hopeless one).
==========================  ==================================================================
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 3
SUPPORTED_SCHEMAS = (1, 2, 3)
RESULT_FILENAME = "result.json"
#: The source checkout this module was imported from (src/cl_sweep/results.py -> the checkout).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def source_revision() -> str | None:
    """The source checkout's commit (with "+dirty" for uncommitted changes under src/ or conf/), or
    None outside git (an installed wheel).

    Cached per process: the code a process runs is the code it imported, so one look at start-up
    describes every job it trains (and spares two git calls per job in a sweep).
    """
    import subprocess

    try:
        rev = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(SOURCE_ROOT), "status", "--porcelain", "--untracked-files=no", "--", "src", "conf"], capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def check_results_folder(output_dir: str | os.PathLike, *, allow_dirty: bool) -> None:
    """Refuses to write into the checkout's stored ``results/`` from uncommitted code.

    A stored result must re-run from its recorded overrides at its recorded revision; one trained
    by changes under ``src/`` or ``conf/`` that were never committed cannot. ``allow_dirty``
    (the job's ``allow_dirty_results=true``) lets it through: the file then records the override
    and a ``+dirty`` revision. Elsewhere (outputs/, multirun/, any folder outside the checkout's
    results/) nothing is checked.

    Raises:
        ValueError: one paragraph naming the folder, the revision and the way out.
    """
    stored = SOURCE_ROOT / "results"
    target = Path(output_dir).resolve()
    if allow_dirty or not (target == stored or stored in target.parents):
        return
    rev = source_revision()
    if rev is not None and rev.endswith("+dirty"):
        raise ValueError(
            f"{target} is inside the stored results ({stored}), and the code has uncommitted changes under "
            f"src/ or conf/ (revision {rev}): a stored result must re-run from its overrides at its recorded "
            "revision. Commit the changes first, write elsewhere (hydra.run.dir=... or hydra.sweep.dir=...), or "
            "add allow_dirty_results=true to store it anyway (the file then records the +dirty revision). "
            "Nothing was trained"
        )
STATUSES = ("ok", "diverged", "pruned")

REQUIRED_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": int,
    "status": str,
    "benchmark": str,
    "activation": str,
    "optimizer": str,
    "hyperparameters": dict,
    "config": dict,
    "overrides": list,
    "seeds": list,
    "n_seeds_requested": int,
    "early_stopped": bool,
    "diverged": list,
    "final_accuracy": list,
    "final_accuracy_mean": (float, int, type(None)),
    "final_accuracy_std": (float, int, type(None)),
    "accuracy_matrix": list,
    "wall_time_s": (float, int),
    "versions": dict,
    "created": str,
}
V2_KEYS: dict[str, type] = {
    "average_accuracy": list,
    "forgetting": list,
    "backward_transfer": list,
    "active_fraction": list,
}


V3_KEYS: dict[str, type | tuple[type, ...]] = {
    "initial_accuracy": list,
    "forward_transfer": list,
    "learning_accuracy": list,
    "class_accuracy": list,
    "train_loss": list,
    "peak_memory_mib": (float, int),
    "time_per_model_s": (float, int),
}
#: The v3 keys with one entry per seed.
V3_PER_SEED = ("initial_accuracy", "forward_transfer", "learning_accuracy", "class_accuracy", "train_loss")
#: The parallel lists of each seed's ``curve``.
CURVE_KEYS = ("step", "task", "accuracy", "task_accuracy")


#: Keys a version 2 or 3 file may lack (checked when present): the held-out validation accuracies, the curves.
OPTIONAL_KEYS: dict[str, type] = {
    "validation_accuracy": list,
    "validation_accuracy_matrix": list,
    "curve": list,
}


class ResultError(ValueError):
    """A result file that is missing, unreadable, truncated or not of this schema."""


def write_result(result: dict[str, Any], directory: str | os.PathLike) -> Path:
    """Validates ``result`` and writes it atomically to ``directory/result.json``.

    The JSON is written to a temporary file in the same directory, flushed and fsynced, then
    renamed over the target, so a crash leaves either the old file or the new one, never half.
    """
    validate_result(result)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / RESULT_FILENAME
    text = json.dumps(result, indent=2, sort_keys=False, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=".result.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates one result file; raises `ResultError` naming the file and the reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ResultError(f"{path}: cannot be read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ResultError(f"{path}: not UTF-8 text (binary or corrupt bytes)") from None
    try:
        result = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultError(f"{path}: not valid JSON, probably truncated ({e.msg}, line {e.lineno})") from None
    try:
        validate_result(result)
    except ResultError as e:
        raise ResultError(f"{path}: {e}") from None
    return result


def validate_result(result: Any) -> None:
    """Raises `ResultError` unless ``result`` is a complete result of a supported schema version."""
    if not isinstance(result, dict):
        raise ResultError(f"not a result object (top level is {type(result).__name__})")
    if "schema" not in result:
        raise ResultError("no 'schema' key: not a cl_sweep result file")
    if result["schema"] not in SUPPORTED_SCHEMAS:
        raise ResultError(f"schema {result['schema']!r} is not a supported version {SUPPORTED_SCHEMAS}")
    required = {**REQUIRED_KEYS, **(V2_KEYS if result["schema"] >= 2 else {}), **(V3_KEYS if result["schema"] >= 3 else {})}
    missing = [k for k in required if k not in result]
    if missing:
        raise ResultError(f"missing keys {missing}")
    for key, types in required.items():
        value = result[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise ResultError(f"key {key!r} has type bool")
        if not isinstance(value, types):
            raise ResultError(f"key {key!r} has type {type(value).__name__}")
    if result["status"] not in STATUSES:
        raise ResultError(f"status {result['status']!r} is not one of {STATUSES}")
    n = len(result["seeds"])
    for key, types in OPTIONAL_KEYS.items():
        if result.get(key) is not None and not isinstance(result[key], types):
            raise ResultError(f"key {key!r} has type {type(result[key]).__name__}")
    optional = tuple(k for k in OPTIONAL_KEYS if result.get(k) is not None)
    per_seed = ("diverged", "final_accuracy", "accuracy_matrix") + (tuple(V2_KEYS) if result["schema"] >= 2 else ()) + optional
    per_seed += V3_PER_SEED if result["schema"] >= 3 else ()
    for key in per_seed:
        if len(result[key]) != n:
            raise ResultError(f"{key!r} has {len(result[key])} entries for {n} seeds")
    if n == 0:
        raise ResultError("no seeds were trained")
    if result["status"] == "pruned":
        _validate_pruned(result)
    elif any(result["diverged"]) != (result["status"] == "diverged"):
        raise ResultError("status does not agree with the per-seed 'diverged' flags")
    elif "tasks_trained" in result:
        raise ResultError(f"'tasks_trained' is only for status 'pruned', not {result['status']!r}")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in result["seeds"]):
        raise ResultError("'seeds' must be integers")
    for key in ("final_accuracy", "validation_accuracy"):
        for a in result.get(key) or ():
            if a is not None and not (isinstance(a, (int, float)) and not isinstance(a, bool) and 0.0 <= a <= 1.0):
                raise ResultError(f"{key.replace('_', ' ')} {a!r} is not a fraction in [0, 1]")
    for seed_curve in result.get("curve") or ():
        _validate_curve(seed_curve)
    if result["status"] == "ok":
        for key in ("final_accuracy_mean", "final_accuracy_std"):
            v = result[key]
            if v is None or not math.isfinite(v):
                raise ResultError(f"status is ok but {key!r} is {v!r}")


def _validate_curve(curve: Any) -> None:
    """One seed's ``curve``: the parallel lists of `CURVE_KEYS`, equally long, steps never decreasing."""
    if not isinstance(curve, dict) or any(not isinstance(curve.get(k), list) for k in CURVE_KEYS):
        raise ResultError(f"a seed's 'curve' must hold the lists {list(CURVE_KEYS)}")
    if len({len(curve[k]) for k in CURVE_KEYS}) != 1:
        raise ResultError(f"a seed's 'curve' lists {list(CURVE_KEYS)} differ in length")
    steps = curve["step"]
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in steps) or steps != sorted(steps):
        raise ResultError("a seed's 'curve' steps must be integers in increasing order")


def _validate_pruned(result: dict[str, Any]) -> None:
    """The rules of a pruned job: ``tasks_trained`` per seed, fewer than its tasks; no final accuracy."""
    trained = result.get("tasks_trained")
    n = len(result["seeds"])
    if not isinstance(trained, list) or len(trained) != n:
        raise ResultError(f"status is 'pruned' but 'tasks_trained' is {trained!r}, not one count per seed ({n} seeds)")
    for count, matrix in zip(trained, result["accuracy_matrix"]):
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count < max(2, len(matrix)):
            raise ResultError(f"'tasks_trained' holds {count!r}; a pruned seed trained 1 to T-1 of its {len(matrix)} tasks")
    if any(a is not None for a in result["final_accuracy"]) or result["final_accuracy_mean"] is not None:
        raise ResultError("status is 'pruned' but a final accuracy is given (a pruned job never finished its last task)")


#: Top-level keys that control how a job runs, not what it computes: a job's identity (`job_identity`)
#: leaves them out, so a sweep re-run with another progress bar, thread count, data folder or tag
#: recognises the results it already holds instead of training them again.
RUN_CONTROL_KEYS = frozenset({"progress", "sweep_progress", "skip_completed", "cpu_threads", "data_dir", "allow_dirty_results", "tag"})


def job_identity(overrides: list[str]) -> list[str]:
    """The overrides that decide a job's numbers: ``overrides`` without the `RUN_CONTROL_KEYS`
    (however given: ``key=``, ``+key=``, ``++key=``, ``~key``), sorted."""
    def key(override: str) -> str:
        return override.lstrip("+~").split("=", 1)[0].strip()

    return sorted(o for o in overrides if not (isinstance(o, str) and key(o) in RUN_CONTROL_KEYS))


def is_complete(directory: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, Any] | None:
    """Returns the stored result in ``directory`` if it is valid (and, when ``overrides`` is
    given, was produced by the same job: the same overrides but for run-control keys, see
    `job_identity`); otherwise None."""
    path = Path(directory) / RESULT_FILENAME
    if not path.is_file():
        return None
    try:
        result = read_result(path)
    except ResultError:
        return None
    if overrides is not None and job_identity(result["overrides"]) != job_identity(overrides):
        return None
    return result


def find_result_files(*roots: str | os.PathLike) -> Iterator[Path]:
    """Yields every ``result.json`` under the given folders (any nesting), sorted."""
    for root in roots:
        root = Path(root)
        if root.is_file():
            yield root
            continue
        yield from sorted(root.rglob(RESULT_FILENAME))


# What a sweep can optimise by name (`hydra.sweeper.objectives=[...]`): one number per job.
METRICS = (
    "final_accuracy_mean",
    "final_accuracy_std",
    "forgetting_mean",
    "backward_transfer_mean",
    "active_fraction_mean",
    "wall_time_s",
    "validation_accuracy_mean",
    "forward_transfer_mean",
    "learning_accuracy_mean",
    "peak_memory_mib",
    "time_per_model_s",
)


def _mean(values: list[Any]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else None


def metrics(result: dict[str, Any]) -> dict[str, float | None]:
    """The job's :data:`METRICS`: the file's scalars, and the per-seed lists as means over their seeds.

    ``forgetting_mean`` and ``backward_transfer_mean`` average the per-seed values;
    ``active_fraction_mean`` the per-seed active fraction after the last task;
    ``validation_accuracy_mean`` the per-seed validation accuracy, None for a diverged job (as
    ``final_accuracy_mean``) and for a job without a validation set; ``forward_transfer_mean`` and
    ``learning_accuracy_mean`` average the per-seed values (learning accuracy is back-filled from
    the matrix diagonal for older files). None where the result has no value (a diverged job, a
    one-task benchmark, a version 1 file; forward transfer and the resources before version 3).
    """
    from cl_sweep.analysis.metrics import learning_accuracy

    learning = result.get("learning_accuracy")
    if learning is None:
        learning = [learning_accuracy(m) for m in result.get("accuracy_matrix") or []]
    out: dict[str, float | None] = {
        "final_accuracy_mean": result.get("final_accuracy_mean"),
        "final_accuracy_std": result.get("final_accuracy_std"),
        "forgetting_mean": _mean(result.get("forgetting") or []),
        "backward_transfer_mean": _mean(result.get("backward_transfer") or []),
        "active_fraction_mean": _mean([seed[-1] for seed in result.get("active_fraction") or [] if seed]),
        "wall_time_s": result.get("wall_time_s"),
        "validation_accuracy_mean": None if result.get("status") != "ok" else _mean(result.get("validation_accuracy") or []),
        "forward_transfer_mean": _mean(result.get("forward_transfer") or []),
        "learning_accuracy_mean": _mean(learning),
        "peak_memory_mib": result.get("peak_memory_mib"),
        "time_per_model_s": result.get("time_per_model_s"),
    }
    return {k: (None if v is None or not math.isfinite(float(v)) else float(v)) for k, v in out.items()}


class Objective(float):
    """What a job returns to its sweeper: ``final_accuracy_mean`` as a float (NaN for a diverged
    or pruned job), carrying the job's other :func:`metrics` in ``.metrics`` for a sweep that names
    its objectives (``hydra.sweeper.objectives=[final_accuracy_mean, active_fraction_mean]``), and
    ``.pruned`` (the sweeper's pruner stopped the job: its trial is PRUNED, not FAIL) and ``.models``
    (the models it trained in this run, 0 when its result was already complete: the sweep's
    progress line, `cl_sweep.progress`). Everything that wants a float (Hydra's sweepers, ``float(...)``) sees one."""

    metrics: dict[str, float | None]
    pruned: bool
    models: int

    def __new__(cls, value: float, metrics: dict[str, float | None] | None = None, pruned: bool = False,
                models: int = 1) -> "Objective":
        obj = super().__new__(cls, value)
        obj.metrics = dict(metrics or {})
        obj.pruned = bool(pruned)
        obj.models = int(models)
        return obj

    def __reduce__(self) -> tuple:  # a job's return crosses process boundaries (joblib)
        return (Objective, (float(self), self.metrics, self.pruned, self.models))

    def __repr__(self) -> str:
        return f"Objective({float(self)!r}{', pruned' if self.pruned else ''})"
