"""Aggregates result.json files into the paper's tables (Markdown, CSV, LaTeX) beside its numbers.

Pipeline: `load_results` (one row per job/file) -> `summarize` (one row per grid point, seeds
pooled over jobs) -> `best_per_cell` (one row per activation x optimizer cell) -> the renderers
(`table2`, `table1`, `optimizer_table`, `details_table`, `problems`) -> `write_tables`.

Which grid point wins is ``select``: ``"test"`` (the paper's rule, the default) picks the highest
test accuracy; ``"validation"`` the highest accuracy on held-out training examples
(``benchmark.validation_fraction``), and still reports the winner's test accuracy.

All accuracies in the DataFrames are in percent (0-100), converted from the files' 0-1 fractions
on loading, because every number they are compared with (the paper's) is in percent.

This module reads plain data only; it must not import JAX or the training engine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cl_sweep.analysis import paper
from cl_sweep.analysis.paper import PaperBest, PaperValue
from cl_sweep.results import ResultError, find_result_files, read_result

#: What names a grid point: the first columns of every frame below.
_GRID_POINT = ("benchmark", "activation", "optimizer", "hp_key", "hyperparameters")

#: Columns of `load_results`' frame (one row per result file).
LOAD_COLUMNS: tuple[str, ...] = (
    *_GRID_POINT,
    "status",
    "early_stopped",
    "n_seeds",
    "n_seeds_requested",
    "seeds",
    "diverged",
    "final_accuracy",
    "active_fraction",
    "accuracy_matrix",
    "average_accuracy",
    "forgetting",
    "backward_transfer",
    "mean",
    "std",
    "learning_accuracy",
    "forward_transfer",
    "validation_accuracy",
    "val_mean",
    "val_std",
    "wall_time_s",
    "peak_memory_mib",
    "time_per_model_s",
    "curve",
    "created",
    "path",
    "preset",
    "source",
)

#: Columns of `summarize`' frame (one row per grid point).
SUMMARY_COLUMNS: tuple[str, ...] = (
    *_GRID_POINT,
    "status",
    "complete",
    "early_stopped",
    "n_jobs",
    "n_seeds",
    "n_seeds_requested",
    "n_diverged_seeds",
    "n_pruned_jobs",
    "duplicate_seeds",
    "seeds",
    "final_accuracy",
    "active_fraction",
    "accuracy_matrix",
    "average_accuracy",
    "forgetting",
    "backward_transfer",
    "mean",
    "std",
    "learning_accuracy",
    "forward_transfer",
    "active_mean",
    "validation_accuracy",
    "val_mean",
    "val_std",
    "wall_time_s",
    "peak_memory_mib",
    "time_per_model_s",
    "paths",
    "sources",
)

#: Columns of `best_per_cell`' frame (one row per benchmark x activation x optimizer).
BEST_COLUMNS: tuple[str, ...] = (
    *_GRID_POINT,
    "mean",
    "std",
    "val_mean",
    "val_std",
    "n_seeds",
    "complete",
    "early_stopped",
    "n_grid_points",
    "n_seeds_total",
    "n_diverged",
    "n_pruned",
    "n_early_stopped",
    "n_incomplete",
    "sources",
)

#: How `best_per_cell` picks a cell's winner, and the note a table gets under each rule (none under the
#: default, so that the paper's tables read as they always have).
SELECT: tuple[str, ...] = ("test", "validation")
SELECTION_NOTES = {
    "test": "Selection: best grid point by test accuracy (the paper's rule).",
    "validation": "Selection: best grid point by validation accuracy; test accuracy reported (the validation "
    "examples are held out of each task's training examples: benchmark.validation_fraction).",
}
#: The columns that carry the held-out validation accuracy (percent).
VALIDATION_COLUMNS = ("validation_accuracy", "val_mean", "val_std")

WITHIN = "✓"
OUTSIDE = "✗"
MISSING = "—"
INCOMPLETE_MARK = "†"
DERIVED_MARK = "‡"
DEFAULTS_KEY_LABEL = "(defaults)"

# Ours is compared at the paper's printed precision (one decimal) so that the mark agrees with
# the numbers a reader sees side by side; the epsilon absorbs float noise such as 76.4 - 1.4.
_DISPLAY_DECIMALS = 1


# --------------------------------------------------------------------------------------------
# Loading


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # 3 and 3.0 name the same grid point whether Hydra parsed the override as int or float.
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    if value is None:
        return "null"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def hyperparameter_key(hyperparameters: dict[str, Any]) -> str:
    """The canonical key of a grid point: its ``k=v`` pairs sorted by name, joined by ", ".

    Args:
        hyperparameters: the result's flat ``hyperparameters`` dict.

    Returns:
        E.g. ``"activation.alpha=3, optimizer.lr=0.01"``; ``""`` for an empty dict.
    """
    return ", ".join(f"{k}={_format_value(hyperparameters[k])}" for k in sorted(hyperparameters))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _job_row(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """Turns one validated result into a row; raises `ResultError` for values the schema check
    does not look inside (element types, ranges) so that one odd file cannot break the tables."""
    seeds = result["seeds"]
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ResultError("'seeds' holds a non-integer")
    if not all(isinstance(d, bool) for d in result["diverged"]):
        raise ResultError("'diverged' holds a non-boolean")
    accuracy: list[float | None] = []
    pruned = result["status"] == "pruned"  # stopped by a sweeper's pruner: no final accuracy
    for acc, diverged in zip(result["final_accuracy"], result["diverged"], strict=True):
        if acc is None:
            if not diverged and not pruned:
                raise ResultError("'final_accuracy' is null for a seed that did not diverge")
            accuracy.append(None)
            continue
        if not _is_number(acc) or not math.isfinite(acc):
            raise ResultError(f"'final_accuracy' holds {acc!r}")
        if not 0.0 <= acc <= 1.0:
            raise ResultError(f"'final_accuracy' {acc!r} is not a fraction in [0, 1]")
        accuracy.append(100.0 * acc)
    try:
        hp_key = hyperparameter_key(result["hyperparameters"])
    except TypeError as e:
        raise ResultError(f"'hyperparameters' cannot be keyed ({e})") from None

    def pct(v: float | None) -> float:
        return math.nan if v is None else 100.0 * float(v)

    # per seed, percent of hidden units active after the last task (None: schema 1, diverged, not measured)
    active: list[float | None] = [None] * len(seeds)
    if result["schema"] >= 2:
        for i, (per_task, diverged) in enumerate(zip(result["active_fraction"], result["diverged"], strict=True)):
            last = per_task[-1] if per_task else None
            if not diverged and _is_number(last) and math.isfinite(last):
                active[i] = 100.0 * float(last)

    # per seed, percent on the held-out validation examples (None: no validation set, or diverged)
    validation: list[float | None] = [None] * len(seeds)
    if result.get("validation_accuracy") is not None:
        for i, (v, diverged) in enumerate(zip(result["validation_accuracy"], result["diverged"], strict=True)):
            if v is None and not diverged:
                raise ResultError("'validation_accuracy' is null for a seed that did not diverge")
            if v is not None:
                if not _is_number(v) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
                    raise ResultError(f"'validation_accuracy' {v!r} is not a fraction in [0, 1]")
                validation[i] = 100.0 * float(v)
    val_mean, val_std = _validation_stats(validation, result["status"] != "ok")

    try:  # per seed, T x T in 0-1, NaN where a task was not evaluated
        matrices = np.array(
            [[[math.nan if v is None else float(v) for v in row] for row in m] for m in result["accuracy_matrix"]], float
        )
    except (TypeError, ValueError):
        raise ResultError("'accuracy_matrix' is not one T x T matrix of numbers per seed") from None
    if matrices.ndim != 3 or len(matrices) != len(seeds) or matrices.shape[1] != matrices.shape[2]:
        raise ResultError(f"'accuracy_matrix' has shape {matrices.shape}, not one T x T matrix per seed ({len(seeds)} seeds)")

    return {
        **_stored_metrics(result, matrices),
        "benchmark": result["benchmark"],
        "activation": result["activation"],
        "optimizer": result["optimizer"],
        "hp_key": hp_key,
        "hyperparameters": dict(result["hyperparameters"]),
        "status": result["status"],
        "early_stopped": result["early_stopped"],
        "n_seeds": len(seeds),
        "n_seeds_requested": result["n_seeds_requested"],
        "seeds": list(seeds),
        "diverged": list(result["diverged"]),
        "final_accuracy": accuracy,
        "active_fraction": active,
        "accuracy_matrix": list(matrices),
        "mean": pct(result["final_accuracy_mean"]),
        "std": pct(result["final_accuracy_std"]),
        "validation_accuracy": validation,
        "val_mean": val_mean,
        "val_std": val_std,
        "wall_time_s": float(result["wall_time_s"]),
        **{k: float(result[k]) if _is_number(result.get(k)) else math.nan for k in ("peak_memory_mib", "time_per_model_s")},
        "curve": result.get("curve"),
        "created": result["created"],
        "path": path,
        "preset": _preset(result["overrides"]),
        "source": _source(result),
    }


#: The continual-learning metrics a result stores per seed (schema 2; learning accuracy and forward
#: transfer schema 3), and `load_results` carries: after the last task, in 0-1 like the accuracy
#: matrices (None where a task they need was not evaluated, and forward transfer before schema 3).
STORED_METRICS = ("average_accuracy", "forgetting", "backward_transfer", "learning_accuracy", "forward_transfer")


def _stored_metrics(result: dict[str, Any], matrices: np.ndarray) -> dict[str, list[float | None]]:
    """Per seed, the `STORED_METRICS` as the result file stores them (average accuracy: after the last
    task); an older file, written before some were stored, gets what its matrices give computed here,
    the one place that back-fills them (schema 1: all but forward transfer; schema 2: learning
    accuracy), and None for forward transfer, which needs the untrained models' accuracies. Raises
    `ResultError` for a stored value that is not a number."""
    from cl_sweep.analysis import metrics

    out: dict[str, list[float | None]] = {}
    if result["schema"] < 3:
        out = {"learning_accuracy": [metrics.learning_accuracy(m) for m in matrices],
               "forward_transfer": [None] * len(matrices)}
    if result["schema"] < 2:
        return {
            "average_accuracy": [metrics.average_accuracy(m)[-1] for m in matrices],
            "forgetting": [metrics.forgetting(m) for m in matrices],
            "backward_transfer": [metrics.backward_transfer(m) for m in matrices],
            **out,
        }
    for key in (k for k in STORED_METRICS if k not in out):
        values = [v[-1] if key == "average_accuracy" and isinstance(v, list) and v else v for v in result[key]]
        if len(values) != len(matrices) or not all(v is None or (_is_number(v) and math.isfinite(v)) for v in values):
            raise ResultError(f"'{key}' does not hold one number (or null) per seed")
        out[key] = [None if v is None else float(v) for v in values]
    return out


def _validation_stats(validation: list[float | None], diverged: bool) -> tuple[float, float]:
    """Mean and population std of the seeds' validation accuracies: NaN when a seed diverged (as the
    test mean) or when a seed has none (no validation set)."""
    if diverged or not validation or any(v is None for v in validation):
        return math.nan, math.nan
    values = np.asarray(validation, dtype=float)
    return float(values.mean()), float(values.std(ddof=0))


def _preset(overrides: list, group: str = "sweep") -> str | None:
    """The preset of ``group`` a job came from (``+sweep=a7`` -> ``"a7"``), None for other jobs."""
    for o in overrides:
        if isinstance(o, str) and o.lstrip("+").startswith(f"{group}="):
            return o.split("=", 1)[1]
    return None


#: The source of a result that has neither a ``tag`` nor a preset (a plain job, or a sweep given on the command line).
NO_SOURCE = "(no preset)"


def _source(result: dict[str, Any]) -> str:
    """What produced a result, for pooling: its ``tag=``, else its ``+sweep=`` preset, else its ``+search=``
    preset (as ``search/<name>``), else `NO_SOURCE`."""
    tag = result["config"].get("tag") if isinstance(result.get("config"), dict) else None
    if isinstance(tag, str) and tag:
        return tag
    if (preset := _preset(result["overrides"])) is not None:
        return preset
    if (search := _preset(result["overrides"], "search")) is not None:
        return f"search/{search}"
    return NO_SOURCE


def load_results(*roots: str | os.PathLike) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """Reads every ``result.json`` under the given folders (any nesting).

    A file that cannot be used (unreadable, corrupt or truncated JSON, not a cl_sweep result, a
    different schema version, odd values) is skipped and reported; the rest is still loaded.

    Args:
        *roots: folders to search (or result files).

    Returns:
        ``(jobs, bad_files)``: ``jobs`` has one row per file with the columns `LOAD_COLUMNS`
        (``final_accuracy``, ``mean`` and ``std`` in percent, ``hp_key`` the canonical
        `hyperparameter_key`; ``validation_accuracy`` per seed and ``val_mean``/``val_std`` in
        percent on the held-out validation examples, None/NaN for a job without them);
        ``bad_files`` lists ``(path, reason)``.
    """
    rows: list[dict[str, Any]] = []
    bad: list[tuple[Path, str]] = []
    for path in find_result_files(*roots):
        try:
            rows.append(_job_row(read_result(path), path))
        except ResultError as e:
            bad.append((path, str(e).removeprefix(f"{path}: ")))
        except UnicodeDecodeError:
            # read_result only anticipates OSError and JSON errors; binary garbage fails earlier.
            bad.append((path, "not UTF-8 text (corrupt file)"))
        except (ValueError, RecursionError) as e:
            bad.append((path, f"cannot be parsed ({type(e).__name__}: {e})"))
    return pd.DataFrame(rows, columns=list(LOAD_COLUMNS)), bad


# --------------------------------------------------------------------------------------------
# Aggregation


def _nan_sum(values: list[float]) -> float:
    """``pandas.Series.sum``'s rule, in its order: NaN counts as 0."""
    return float(np.nansum(np.asarray(values, dtype=float)))


def _nan_max(values: list[float]) -> float:
    """``pandas.Series.max``'s rule: the largest number, NaN when there is none."""
    finite = [v for v in values if not math.isnan(v)]
    return float(max(finite)) if finite else math.nan


def _nan_mean(values: list[float]) -> float:
    """``pandas.Series.mean``'s rule: the mean of the numbers (their sum over their count), NaN when there is none."""
    count = sum(not math.isnan(v) for v in values)
    return _nan_sum(values) / count if count else math.nan


def _pooled(jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pools the seeds of the jobs of one grid point, given as rows of `load_results`'s frame oldest
    first (`summarize` sorts them once by ``created``, then path); a seed run twice is kept once (the newest)."""
    by_seed: dict[int, tuple[float | None, bool, float | None, np.ndarray, float | None, tuple]] = {}
    duplicates: set[int] = set()
    # Newest last, so that a re-run of a seed supersedes the older run of it.
    for job in jobs:
        for seed, acc, div, act, matrix, val, *stored in zip(
            job["seeds"], job["final_accuracy"], job["diverged"], job["active_fraction"], job["accuracy_matrix"],
            job["validation_accuracy"], *(job[k] for k in STORED_METRICS), strict=True,
        ):
            if seed in by_seed:
                duplicates.add(seed)
            by_seed[seed] = (acc, div, act, matrix, val, tuple(stored))
    seeds = sorted(by_seed)
    accuracy = [by_seed[s][0] for s in seeds]
    active = [by_seed[s][2] for s in seeds]
    n_diverged = sum(by_seed[s][1] for s in seeds)
    validation = [by_seed[s][4] for s in seeds]
    val_mean, val_std = _validation_stats(validation, bool(n_diverged))
    if n_diverged:
        status, mean, std, active_mean = "diverged", math.nan, math.nan, math.nan
    else:
        values = np.asarray(accuracy, dtype=float)
        status, mean, std = "ok", float(values.mean()), float(values.std(ddof=0))
        # NaN unless every seed has it (a schema-1 seed pooled with newer ones does not count half)
        active_mean = math.nan if any(a is None for a in active) else float(np.mean(active))
    n_requested = int(max(job["n_seeds_requested"] for job in jobs))
    early_stopped = any(bool(job["early_stopped"]) for job in jobs)
    return {
        "status": status,
        # A diverged grid point is final (more seeds cannot rescue it), so it is not "incomplete".
        "complete": early_stopped or status == "diverged" or len(seeds) >= n_requested,
        "early_stopped": early_stopped,
        "n_jobs": len(jobs),
        "n_seeds": len(seeds),
        "n_seeds_requested": n_requested,
        "n_diverged_seeds": int(n_diverged),
        "duplicate_seeds": sorted(duplicates),
        "seeds": seeds,
        "final_accuracy": accuracy,
        "active_fraction": active,
        # the pooled seeds' matrices; a diverged seed's is left out (its accuracy is not a result)
        "accuracy_matrix": [by_seed[s][3] for s in seeds if not by_seed[s][1]],
        # and their stored metrics, likewise
        **{k: [by_seed[s][5][i] for s in seeds if not by_seed[s][1]] for i, k in enumerate(STORED_METRICS)},
        "mean": mean,
        "std": std,
        "active_mean": active_mean,
        "validation_accuracy": validation,
        "val_mean": val_mean,
        "val_std": val_std,
        "wall_time_s": _nan_sum([job["wall_time_s"] for job in jobs]),
        # the largest process any of its jobs trained in; the mean time per model over the jobs that measured them
        "peak_memory_mib": _nan_max([job["peak_memory_mib"] for job in jobs]),
        "time_per_model_s": _nan_mean([job["time_per_model_s"] for job in jobs]),
        "paths": [Path(job["path"]) for job in jobs],
    }


#: ``summarize(pool=...)``'s words: every source into one grid point, or none.
POOL_ALL, POOL_NONE = "all", "none"


def pool_groups(jobs: pd.DataFrame, pool: str | Sequence[str] = POOL_ALL) -> pd.Series:
    """Per job, the label of the sources its seeds may pool with (see `summarize`).

    Raises:
        ValueError: ``pool`` is not ``"all"``, ``"none"`` or a list of sources the jobs have.
    """
    if isinstance(pool, str) and pool in (POOL_ALL, POOL_NONE):
        return pd.Series("*" if pool == POOL_ALL else jobs["source"], index=jobs.index, dtype=object)
    chosen = [p.strip() for p in (pool.split(",") if isinstance(pool, str) else pool)]
    found = sorted(set(jobs["source"]))
    unknown = [p for p in chosen if p not in found]
    if unknown or len(chosen) < 2:
        raise ValueError(
            f"pool={','.join(map(str, chosen))!r} is not allowed: "
            + (f"no result comes from {', '.join(map(repr, unknown))}; " if unknown else "a list needs two sources or more; ")
            + f"allowed: {POOL_ALL!r} (every source into one grid point), {POOL_NONE!r} (each source on its own), "
            f"or a comma-separated list of two or more of the sources found: {', '.join(found)}"
        )
    together = "+".join(chosen)
    return jobs["source"].map(lambda s: together if s in chosen else s).astype(object)


def summarize(jobs: pd.DataFrame, pool: str | Sequence[str] = POOL_ALL) -> pd.DataFrame:
    """One row per grid point (benchmark, activation, optimizer, hyperparameter key).

    Jobs of the same grid point (e.g. different seed ranges) are pooled per seed; a seed present
    in several jobs is kept once (the newest by ``created``) and listed in ``duplicate_seeds``.
    ``pool`` says which jobs' sources (a ``tag=``, else the ``+sweep=``/``+search=`` preset: the
    ``source`` column) may pool: ``"all"`` (the default: any source, as the stored tables do),
    ``"none"`` (each source's runs are grid points of their own) or a list of sources pooled together
    (the rest on their own). Each row's ``sources`` lists the sources it pooled, and the tables show
    it, so pooling across presets is never silent.
    ``mean``/``std`` are over the pooled seeds, population std (ddof=0), in percent;
    ``active_mean`` the mean share (percent) of active hidden units after the last task, NaN unless
    every pooled seed measured it (schema 2); ``val_mean``/``val_std`` the same statistics of the
    held-out validation accuracy, NaN unless every pooled seed has one (and for a diverged point).

    A grid point with any diverged seed gets status ``"diverged"`` and NaN mean/std, so it is
    never averaged into anything. A job a sweeper's pruner stopped (status ``"pruned"``) is never
    pooled either: it is counted in ``n_pruned_jobs``, and a grid point with nothing but pruned
    jobs gets status ``"pruned"``, NaN mean/std, and is complete (final, like a diverged one). It is ``complete`` when it has at least the requested number of
    seeds (the largest request among its jobs), was early-stopped, or diverged.

    Args:
        jobs: the frame from `load_results`.

    Returns:
        A frame with the columns `SUMMARY_COLUMNS`, sorted in paper order.
    """
    keys = ["benchmark", "activation", "optimizer", "hp_key", "_pool"]
    frame = jobs.assign(_pool=pool_groups(jobs, pool))
    # One sort and one conversion to rows for every grid point (per-group pandas calls cost
    # seconds over a few thousand grid points): rows oldest first by ``created``, then path.
    newest_last = np.argsort(
        np.lexsort((frame["path"].to_numpy(dtype=str), frame["created"].to_numpy(dtype=str))), kind="stable"
    )
    records = frame.to_dict("records")
    rows = []
    for key, where in frame.groupby(keys, sort=False).indices.items():
        benchmark, activation, optimizer, hp_key, _ = key
        group = [records[i] for i in sorted(where, key=lambda i: newest_last[i])]
        kept = [job for job in group if job["status"] != "pruned"]
        if not kept:
            pooled = {**_pooled(group), "status": "pruned", "complete": True, "mean": math.nan, "std": math.nan,
                      "active_mean": math.nan, "accuracy_matrix": [], **dict.fromkeys(STORED_METRICS, [])}
        else:
            pooled = _pooled(kept)
        rows.append(
            {
                "benchmark": benchmark,
                "activation": activation,
                "optimizer": optimizer,
                "hp_key": hp_key,
                "hyperparameters": records[where[0]]["hyperparameters"],
                **pooled,
                "n_pruned_jobs": len(group) - len(kept),
                "sources": tuple(sorted({job["source"] for job in group})),
            }
        )
    return _paper_sorted(pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)), extra=["hp_key", "sources"])


def _paper_sorted(df: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    if df.empty:
        return df.reset_index(drop=True)
    act_rank = {k: i for i, k in enumerate(paper.paper_order(df["activation"], paper.ACTIVATION_ORDER))}
    opt_rank = {k: i for i, k in enumerate(paper.paper_order(df["optimizer"], paper.OPTIMIZER_ORDER))}
    order = df.assign(
        _a=df["activation"].map(act_rank), _o=df["optimizer"].map(opt_rank)
    ).sort_values(["benchmark", "_a", "_o", *extra], kind="stable")
    return order.drop(columns=["_a", "_o"]).reset_index(drop=True)


def check_select(select: Any) -> str:
    """``select`` itself when it is a rule of `SELECT`; else ValueError naming it and the allowed ones."""
    if not isinstance(select, str) or select not in SELECT:
        raise ValueError(
            f"select={select!r} is not allowed; allowed: 'test' (the paper's rule: the grid point with the highest "
            "test accuracy) or 'validation' (the highest accuracy on the held-out validation examples of "
            "benchmark.validation_fraction; its test accuracy is reported)"
        )
    return select


def _score(select: str) -> tuple[str, str]:
    """The columns a rule ranks grid points by: (mean, std), test or validation."""
    return ("val_mean", "val_std") if check_select(select) == "validation" else ("mean", "std")


def _ranked(points: pd.DataFrame, select: str = "test") -> pd.DataFrame:
    """Grid points best first: complete runs, then early-stopped, then incomplete; within a tier
    the highest mean, then the smaller std (then the key, so ties resolve the same every time);
    with ``select="validation"`` the validation mean and std in their place."""
    mean, std = _score(select)
    tier = np.where(~points["complete"], 2, np.where(points["early_stopped"], 1, 0))
    return points.assign(_tier=tier).sort_values(
        ["_tier", mean, std, "hp_key"], ascending=[True, False, True, True], kind="stable"
    )


def _selectable(points: pd.DataFrame, select: str) -> pd.DataFrame:
    """The grid points a rule can pick: ``ok`` ones, and under ``validation`` only those with a validation mean."""
    ok = points[points["status"] == "ok"]
    return ok[np.isfinite(ok["val_mean"].astype(float))] if _score(select)[0] == "val_mean" else ok


def best_per_cell(summary: pd.DataFrame, *, select: str = "test") -> pd.DataFrame:
    """The winning grid point of every (benchmark, activation, optimizer) cell.

    The winner is the highest mean among the ``ok`` grid points, looked for in tiers: complete
    runs with all seeds first, then early-stopped ones, then incomplete ones. Early-stopped points
    ran fewer seeds, so their means are not comparable to full ones and only win when nothing else
    ran; incomplete points win only a cell that has nothing better and are marked in the tables.
    Ties go to the smaller std. A cell whose every grid point diverged has NaN mean and no
    winner (``hp_key`` None).

    With ``select="validation"`` the same tiers rank the grid points by their validation mean
    (ties: the smaller validation std), and the winner's reported ``mean``/``std`` are still its
    test accuracy; a grid point without a validation accuracy cannot win. A cell whose finished
    grid points all lack one is refused rather than left without a winner, so that a table never
    shows a cell as empty (or as diverged) when it simply ran without a validation set.

    Args:
        summary: the frame from `summarize`.
        select: ``"test"`` (the paper's rule) or ``"validation"``.

    Returns:
        A frame with the columns `BEST_COLUMNS`, in paper order.

    Raises:
        ValueError: a bad ``select``, or, under ``validation``, the cells that have ``ok`` grid
            points but none with a validation accuracy (listed).
    """
    check_select(select)
    rows, unselectable = [], []
    cell_keys = ["benchmark", "activation", "optimizer"]
    # Ranked once for every cell (one stable sort: within a cell, the order ranking the cell alone
    # gives); a cell's winner is its first ranked point.
    ranked = _ranked(_selectable(summary, select), select)
    winners: dict[tuple, dict[str, Any]] = {}
    for key, win in zip(ranked[cell_keys].itertuples(index=False, name=None), ranked.to_dict("records")):
        winners.setdefault(key, win)
    status = summary["status"].to_numpy()
    n_seeds = summary["n_seeds"].to_numpy()
    early = summary["early_stopped"].to_numpy()
    incomplete = (~summary["complete"]).to_numpy()
    for (benchmark, activation, optimizer), where in summary.groupby(cell_keys, sort=False).indices.items():
        win = winners.get((benchmark, activation, optimizer))
        if win is None and (status[where] == "ok").any():
            unselectable.append(f"{benchmark} / {activation} / {optimizer}")
        row: dict[str, Any] = {
            "benchmark": benchmark,
            "activation": activation,
            "optimizer": optimizer,
            "hp_key": None,
            "hyperparameters": None,
            "mean": math.nan,
            "std": math.nan,
            "val_mean": math.nan,
            "val_std": math.nan,
            "n_seeds": 0,
            "complete": False,
            "early_stopped": False,
            "sources": (),
        }
        if win is not None:
            row.update(
                hp_key=win["hp_key"],
                hyperparameters=win["hyperparameters"],
                mean=float(win["mean"]),
                std=float(win["std"]),
                val_mean=float(win["val_mean"]),
                val_std=float(win["val_std"]),
                n_seeds=int(win["n_seeds"]),
                complete=bool(win["complete"]),
                early_stopped=bool(win["early_stopped"]),
                sources=tuple(win.get("sources", ())),  # a hand-made frame may not say
            )
        row.update(
            n_grid_points=len(where),
            n_seeds_total=int(n_seeds[where].sum()),
            n_diverged=int((status[where] == "diverged").sum()),
            n_pruned=int((status[where] == "pruned").sum()),
            n_early_stopped=int(early[where].sum()),
            n_incomplete=int(incomplete[where].sum()),
        )
        rows.append(row)
    if unselectable:
        shown = "; ".join(unselectable[:5]) + (f"; and {len(unselectable) - 5} more" if len(unselectable) > 5 else "")
        held = _held_out_folder(summary)
        alone = (f"The held-out runs here are under {held}: tables of them alone come from "
                 f"`python -m cl_sweep.analysis.tables {held} --select validation --out tables_validation`. "
                 "Else run " if held else "Run ")
        raise ValueError(
            f"select='validation': {len(unselectable)} cell(s) have finished grid points but none with a validation "
            f"accuracy, so none can be picked by it: {shown}. {alone}those cells with "
            "benchmark.validation_fraction > 0 (e.g. 0.1), leave out the results that have none, or select by "
            "test accuracy (select='test', the paper's rule)"
        )
    return _paper_sorted(pd.DataFrame(rows, columns=list(BEST_COLUMNS)))


def _held_out_folder(summary: pd.DataFrame) -> str | None:
    """The folder that holds every result with a validation accuracy in ``summary`` (None: none, or no paths)."""
    if "paths" not in summary.columns:
        return None
    held = summary[np.isfinite(summary["val_mean"].astype(float))]
    paths = [str(Path(p).parent) for ps in held["paths"] if isinstance(ps, (list, tuple)) for p in ps]
    if not paths:
        return None
    common = Path(os.path.commonpath(paths))
    # a sweep's folder, not one job's: up to the first level with the benchmark/cell folders below it
    for parent in [common, *common.parents]:
        if (parent / "multirun.yaml").is_file():
            common = parent
            break
    return os.path.relpath(common) if not Path(os.path.relpath(common)).as_posix().startswith("..") else str(common)


# --------------------------------------------------------------------------------------------
# Rendering


@dataclass
class Table:
    """A rendered table: ``display`` (strings, for Markdown/LaTeX) and ``data`` (numbers, CSV)."""

    name: str
    title: str
    display: pd.DataFrame
    data: pd.DataFrame
    legend: str = ""
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, title: str, display_rows: list[dict], columns: Sequence[str], data_rows: list[dict],
           legend: str = "", notes: Sequence[str] = ()) -> "Table":
        """A table from its rows: ``display_rows`` (strings, in ``columns``) and ``data_rows`` (numbers)."""
        return cls(name, title, pd.DataFrame(display_rows, columns=list(columns)), pd.DataFrame(data_rows), legend,
                   list(notes))

    def to_markdown(self) -> str:
        """The table as a Markdown section (heading, legend, table, notes)."""
        parts = [f"## {self.title}", ""]
        if self.legend:
            parts += [self.legend, ""]
        if self.display.empty:
            parts.append("_No data._")
        else:
            parts.append(self.display.to_markdown(index=False, disable_numparse=True))
        if self.notes:
            parts += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(parts) + "\n"

    def to_latex(self) -> str:
        """The table as a LaTeX ``table`` float (needs ``booktabs`` and ``amssymb``)."""
        notes = [self.legend, *self.notes] if self.legend else self.notes
        return _latex_table(self.display, caption=self.title, label=f"tab:{self.name}", notes=notes)


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.{_DISPLAY_DECIMALS}f} ± {std:.{_DISPLAY_DECIMALS}f}"


def _fmt_paper(value: PaperValue | PaperBest | None) -> str:
    return MISSING if value is None else _fmt(value.mean, value.std)


within_paper = paper.within_paper  # one rule for the tables and the heatmap (cl_sweep.analysis.paper)


def _mark(within: bool | None) -> str:
    return "" if within is None else (WITHIN if within else OUTSIDE)


def _ours(row: pd.Series | None) -> str:
    if row is None:
        return MISSING
    if not math.isfinite(row["mean"]):
        return "diverged"
    return _fmt(row["mean"], row["std"]) + ("" if row["complete"] else INCOMPLETE_MARK)


def _for_benchmark(best: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    return best[best["benchmark"] == benchmark].reset_index(drop=True)


def _paper_table2(benchmark: str) -> dict[str, dict[str, PaperValue]]:
    return paper.PAPER_TABLE2 if benchmark == paper.PAPER_BENCHMARK else {}


def table2(best: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK) -> Table:
    """Paper Table 2: activation x optimizer matrix of ours (best grid point) beside the paper's.

    Rows and columns are in paper order: all of the paper's rows and columns, plus any other
    activation/optimizer in our data.

    Args:
        best: the frame from `best_per_cell` (may hold several benchmarks).
        benchmark: which benchmark to tabulate; paper values are shown only for Split-MNIST.

    Returns:
        The `Table`; its ``data`` has one row per cell with numeric ours/paper/diff columns.
    """
    best = _for_benchmark(best, benchmark)
    ref = _paper_table2(benchmark)
    activations = paper.paper_order([*ref, *best["activation"]], paper.ACTIVATION_ORDER)
    optimizers = paper.paper_order(
        [*(o for row in ref.values() for o in row), *best["optimizer"]], paper.OPTIMIZER_ORDER
    )
    cells = {(r.activation, r.optimizer): r for _, r in best.iterrows()}
    display_rows, data_rows = [], []
    for act in activations:
        drow = {"Activation": paper.activation_name(act)}
        for opt in optimizers:
            ours = cells.get((act, opt))
            pv = ref.get(act, {}).get(opt)
            mean = math.nan if ours is None else float(ours["mean"])
            within = within_paper(mean, pv)
            text = _ours(ours)
            if within is not None:
                text += f" {_mark(within)}"
            expected = paper.a6_cell_size(act, opt) if benchmark == paper.PAPER_BENCHMARK else None
            if ours is not None and expected and int(ours["n_grid_points"]) < expected:
                text += f" [{int(ours['n_grid_points'])}/{expected}]"
            if pv is not None:
                text += f" ({_fmt_paper(pv)})"
            drow[paper.optimizer_name(opt)] = text
            data_rows.append(
                {
                    "benchmark": benchmark,
                    "activation": act,
                    "optimizer": opt,
                    "mean": mean,
                    "std": math.nan if ours is None else float(ours["std"]),
                    "n_seeds": 0 if ours is None else int(ours["n_seeds"]),
                    "complete": None if ours is None else bool(ours["complete"]),
                    "paper_mean": math.nan if pv is None else pv.mean,
                    "paper_std": math.nan if pv is None else pv.std,
                    "diff": mean - pv.mean if pv is not None else math.nan,
                    "within_paper_std": within,
                    "hyperparameters": None if ours is None else ours["hp_key"],
                }
            )
        display_rows.append(drow)
    legend = (
        "Final accuracy (%), mean ± std over seeds of the best grid point per cell"
        + (
            "; in parentheses the paper's value. "
            f"{WITHIN} = ours within paper mean ± paper std, {OUTSIDE} = outside."
            if ref
            else f". No paper values for benchmark `{benchmark}`."
        )
    )
    notes = [
        f"{MISSING} = not run; diverged = every grid point of the cell diverged; "
        f"{INCOMPLETE_MARK} = best grid point has fewer seeds than requested"
        + ("; [k/N] = only k of the cell's N A.6 grid points have been run (the best so far is shown)."
           if benchmark == paper.PAPER_BENCHMARK else ".")  # A.6 defines Split-MNIST's grid only
    ]
    return Table.of(
        "table2",
        f"Table 2: final accuracy per activation and optimizer ({benchmark})",
        display_rows, ["Activation", *map(paper.optimizer_name, optimizers)],
        data_rows,
        legend,
        notes,
    )


def best_over(best: pd.DataFrame, by: str | Sequence[str], *, select: str = "test") -> pd.DataFrame:
    """Among `best_per_cell`'s cells, the one with the highest mean (ties: smaller std) for each group of
    ``by`` (Table 1: by activation; the optimizer table: by optimizer); cells without a mean are left out.
    With ``select="validation"`` the cells' validation mean and std decide instead (their test accuracy
    is what the tables report)."""
    mean, std = _score(select)
    ok = best[np.isfinite(best[mean].astype(float)) & np.isfinite(best["mean"].astype(float))]
    ranked = ok.sort_values([mean, std], ascending=[False, True], kind="stable")
    return ranked.groupby(by if isinstance(by, str) else list(by), sort=False).head(1).reset_index(drop=True)


def _best_over(best: pd.DataFrame, by: str, select: str = "test") -> dict[str, pd.Series]:
    """`best_over` as a mapping: value of ``by`` -> its winning cell."""
    return {row[by]: row for _, row in best_over(best, by, select=select).iterrows()}


def _paper_row_best(activation: str) -> PaperBest | None:
    row = paper.PAPER_TABLE2.get(activation)
    if not row:
        return None
    opt, v = max(row.items(), key=lambda kv: kv[1].mean)
    return PaperBest(v.mean, v.std, opt)


def _best_view(
    best: pd.DataFrame,
    benchmark: str,
    key: str,
    refs: dict[str, PaperBest],
    fallback=None,
    select: str = "test",
) -> tuple[list[dict], list[dict], bool]:
    """Rows of a "best partner per activation" (key="activation") or "per optimizer" table.

    ``refs`` are the paper's printed entries; ``fallback(name)`` supplies one (marked) where the
    paper printed none. Returns the display rows, the numeric rows and whether a fallback was used.
    """
    partner = "optimizer" if key == "activation" else "activation"
    name = {"activation": paper.activation_name, "optimizer": paper.optimizer_name}
    order = paper.ACTIVATION_ORDER if key == "activation" else paper.OPTIMIZER_ORDER
    best = _for_benchmark(best, benchmark)
    winners = _best_over(best, key, select)
    display_rows, data_rows, derived = [], [], False
    for item in paper.paper_order(best[key], order):
        win = winners.get(item)
        ref, suffix = refs.get(item), ""
        if ref is None and fallback is not None and (ref := fallback(item)) is not None:
            suffix, derived = DERIVED_MARK, True
        mean = math.nan if win is None else float(win["mean"])
        within = within_paper(mean, ref)
        # How much of the A.6 grid behind this row has been run (the best over a partial row may change).
        expected = sum(
            paper.a6_cell_size(*((item, o) if key == "activation" else (o, item))) or 0
            for o in (paper.OPTIMIZER_ORDER if key == "activation" else paper.PAPER_ACTIVATIONS)
        )
        run = int(best.loc[best[key] == item, "n_grid_points"].sum())
        display_rows.append(
            {
                key.capitalize(): name[key](item),
                "Ours": _ours(win) if win is not None else "diverged",
                partner.capitalize(): MISSING if win is None else name[partner](win[partner]),
                "Paper": _fmt_paper(ref) + suffix,
                f"Paper {partner}": MISSING if ref is None else name[partner](ref.partner),
                "Within": _mark(within) or MISSING,
                "A.6 grid run": f"{run}/{expected}" if benchmark == paper.PAPER_BENCHMARK and expected else str(run),
            }
        )
        row = {
            "benchmark": benchmark,
            key: item,
            partner: None if win is None else win[partner],
            "mean": mean,
            "std": math.nan if win is None else float(win["std"]),
            "hyperparameters": None if win is None else win["hp_key"],
            "paper_mean": math.nan if ref is None else ref.mean,
            "paper_std": math.nan if ref is None else ref.std,
            f"paper_{partner}": None if ref is None else ref.partner,
        }
        if fallback is not None:
            row["paper_from_table2"] = bool(suffix)
        data_rows.append({**row, "within_paper_std": within})
    return display_rows, data_rows, derived


def table1(best: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK, *, select: str = "test") -> Table:
    """Paper Table 1: the best optimizer per activation, ours vs the paper's.

    Rows: the activations in our data, in paper order. Where the printed Table 1 has no row for an
    activation, the paper column shows the best of its Table 2 row instead (marked).

    Args:
        best: the frame from `best_per_cell`.
        benchmark: which benchmark to tabulate.
        select: the rule ``best`` was picked by (`best_per_cell`); it also picks each row's best cell.

    Returns:
        The `Table`.
    """
    has_paper = benchmark == paper.PAPER_BENCHMARK
    display_rows, data_rows, derived = _best_view(
        best, benchmark, "activation", paper.PAPER_TABLE1 if has_paper else {},
        fallback=_paper_row_best if has_paper else None, select=select,
    )
    notes = []
    if derived:
        notes.append(f"{DERIVED_MARK} = not in the paper's Table 1; best of its Table 2 row.")
    if has_paper:
        cited = "; ".join(
            f"{c.name} {c.accuracy:g} ({c.epochs} epoch{'s' if c.epochs != 1 else ''}"
            + (f", {paper.optimizer_name(c.optimizer)})" if c.optimizer else ")")
            for c in paper.PAPER_TABLE1_CITED
        )
        notes.append(f"Also cited in the paper's Table 1 (other work, not reproduced): {cited}.")
        notes.append(
            "Paper values as printed in its Table 1; one std there differs from its Table 2 "
            "(ReLU/Adam 7.9 vs 9.7)."
        )
    return _view_table("table1", f"Table 1: best optimizer per activation ({benchmark})", "Activation", "Optimizer",
                       display_rows, data_rows, notes)


def optimizer_table(best: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK, *, select: str = "test") -> Table:
    """The paper's optimizer table: the best activation per optimizer, ours vs the paper's.

    Args:
        best: the frame from `best_per_cell`.
        benchmark: which benchmark to tabulate.
        select: the rule ``best`` was picked by (`best_per_cell`); it also picks each row's best cell.

    Returns:
        The `Table`; rows are the optimizers in our data, in paper order.
    """
    has_paper = benchmark == paper.PAPER_BENCHMARK
    display_rows, data_rows, _ = _best_view(
        best, benchmark, "optimizer", paper.PAPER_OPTIMIZER_TABLE if has_paper else {}, select=select
    )
    notes = []
    if has_paper:
        notes.append(
            "Paper values as printed in its optimizer table; two stds differ from its Table 2 "
            "(SGDM/Top-K subtract 3.4 vs 3.5, SGD/Hard ASH 5.3 vs 7.6)."
        )
    return _view_table("optimizers", f"Best activation per optimizer ({benchmark})", "Optimizer", "Activation",
                       display_rows, data_rows, notes)


def _view_table(name: str, title: str, per: str, other: str, display_rows: list, data_rows: list, notes: list[str]) -> Table:
    """Table 1 and the optimizer table: for each ``per`` (activation, optimizer), the best ``other``, ours beside the paper's."""
    return Table.of(
        name,
        title,
        display_rows, [per, "Ours", other, "Paper", f"Paper {other.lower()}", "Within", "A.6 grid run"],
        data_rows,
        f"Final accuracy (%) of the best {other.lower()} for each {per.lower()}. Within: {WITHIN} = ours "
        f"within paper mean ± paper std, {OUTSIDE} = outside.",
        notes,
    )


def details_table(best: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK, *, select: str = "test") -> Table:
    """Per cell of ``benchmark`` in ``best`` (`best_per_cell`'s frame, picked by rule ``select``), in paper
    order: the winning hyperparameters, how much of the grid was run, which sources the winner's runs
    came from and, when the winners were picked by validation accuracy, the winner's validation accuracy."""
    best = _for_benchmark(best, benchmark)
    display_rows = []
    for _, r in best.iterrows():
        if _missing(r["hp_key"]):
            hps = "(all diverged)"
        else:
            # The activation's and optimizer's own values; the fixed protocol keys (model.*,
            # benchmark.*) are the same in every cell and stay in the CSV.
            hps = _component_keys(r["hp_key"])
        by_validation = {}
        if check_select(select) == "validation":
            by_validation["Validation (best)"] = (
                _fmt(r["val_mean"], r["val_std"]) if math.isfinite(r["val_mean"]) else MISSING
            )
        display_rows.append(
            {
                "Activation": paper.activation_name(r["activation"]),
                "Optimizer": paper.optimizer_name(r["optimizer"]),
                "Best": _ours(r),
                **by_validation,
                "Seeds (best)": str(r["n_seeds"]),
                "Winning hyperparameters": hps,
                "Grid points": str(r["n_grid_points"]) + (
                    f"/{paper.a6_cell_size(r['activation'], r['optimizer'])}"
                    if benchmark == paper.PAPER_BENCHMARK and paper.a6_cell_size(r["activation"], r["optimizer"])
                    else ""
                ),
                "Seeds run": str(r["n_seeds_total"]),
                "Diverged": str(r["n_diverged"]),
                "Early-stopped": str(r["n_early_stopped"]),
                "Incomplete": str(r["n_incomplete"]),
                "Runs from": " + ".join(r["sources"]) or MISSING,
            }
        )
    data = without_empty_validation(best.drop(columns=["hyperparameters"]).rename(columns={"hp_key": "hyperparameters"})).assign(
        sources=best["sources"].map(lambda s: ";".join(s))
    )
    return Table(
        "details",
        f"Details: winning hyperparameters and grid coverage ({benchmark})",
        pd.DataFrame(
            display_rows,
            columns=[
                "Activation", "Optimizer", "Best", *(["Validation (best)"] if select == "validation" else []),
                "Seeds (best)", "Winning hyperparameters", "Grid points", "Seeds run", "Diverged", "Early-stopped",
                "Incomplete", "Runs from",
            ],
        ),
        data,
        "Grid points: distinct hyperparameter settings run for the cell; seeds run: over all of "
        "them; diverged/early-stopped/incomplete: how many grid points. Runs from: the presets (or tag=) whose "
        "runs the winning grid point pools (A + B: seeds of both, see Problems; make tables POOL=none keeps "
        "each source apart).",
    )


def without_empty_validation(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without its `VALIDATION_COLUMNS` when no row has a validation accuracy, so that the
    CSVs of results without a validation set are the bytes they always were."""
    present = [c for c in VALIDATION_COLUMNS if c in frame.columns]
    if "val_mean" in frame.columns and np.isfinite(frame["val_mean"].astype(float)).any():
        return frame
    if "validation_accuracy" in frame.columns and frame["validation_accuracy"].map(
        lambda vs: isinstance(vs, list) and any(v is not None for v in vs)
    ).any():
        return frame
    return frame.drop(columns=present)


def _missing(value: Any) -> bool:
    # pandas stores None in a string column as NaN, so both mean "no value" here.
    return value is None or (isinstance(value, float) and math.isnan(value))


def _component_keys(hp_key: Any) -> str:
    """A grid point's activation and optimizer values (the fixed protocol keys, model.* and
    benchmark.*, are the same in every cell of the paper's tables)."""
    own = [kv for kv in str(hp_key).split(", ") if kv.startswith(("activation.", "optimizer."))]
    return ", ".join(own) or str(hp_key or "") or DEFAULTS_KEY_LABEL


def _grid_point_label(r: pd.Series) -> str:
    return (
        f"{r['benchmark']} / {paper.activation_name(r['activation'])} / "
        f"{paper.optimizer_name(r['optimizer'])} / {r['hp_key'] or DEFAULTS_KEY_LABEL}"
    )


def problems(
    summary: pd.DataFrame, bad_files: Iterable[tuple[Path, str]] = ()
) -> list[tuple[str, str]]:
    """Everything a reader of the tables should know is missing or wrong.

    Args:
        summary: the frame from `summarize` (all benchmarks).
        bad_files: the ``(path, reason)`` list from `load_results`.

    Returns:
        ``(kind, message)`` pairs; kinds are ``unreadable``, ``incomplete``, ``diverged``,
        ``pruned``, ``duplicate_seeds`` and ``pooled``.
    """
    out = [("unreadable", f"`{p}`: {reason}") for p, reason in bad_files]
    for _, r in summary.iterrows():
        label = _grid_point_label(r)
        if not r["complete"]:
            out.append(
                ("incomplete", f"{label}: {r['n_seeds']} of {r['n_seeds_requested']} seeds")
            )
        if r["status"] == "diverged":
            out.append(
                ("diverged", f"{label}: {r['n_diverged_seeds']} of {r['n_seeds']} seeds diverged")
            )
        if r["n_pruned_jobs"]:
            out.append(("pruned", f"{label}: {r['n_pruned_jobs']} job(s) pruned by the sweeper"))
        if len(r["sources"]) > 1:
            out.append(("pooled", f"{label}: seeds of {' + '.join(r['sources'])} pooled (make tables POOL=none keeps them apart)"))
        if r["duplicate_seeds"]:
            out.append(
                (
                    "duplicate_seeds",
                    f"{label}: seed(s) {', '.join(map(str, r['duplicate_seeds']))} found in more "
                    "than one result file; kept the newest",
                )
            )
    return out


_PROBLEM_TITLES = {
    "unreadable": "Unreadable result files (skipped)",
    "incomplete": "Incomplete grid points (fewer seeds than requested)",
    "diverged": "Diverged grid points (excluded from every mean)",
    "pruned": "Jobs pruned by a sweeper at a task boundary (excluded from every mean)",
    "duplicate_seeds": "Seeds run more than once",
    "pooled": "Grid points pooled across presets or tags",
}


def problems_markdown(items: Sequence[tuple[str, str]]) -> str:
    """The problems as a Markdown section, grouped by kind."""
    parts = ["## Problems", ""]
    if not items:
        return "\n".join(parts + ["None.", ""])
    for kind, title in _PROBLEM_TITLES.items():
        messages = [m for k, m in items if k == kind]
        if messages:
            parts += [f"### {title} ({len(messages)})", "", *[f"- {m}" for m in messages], ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# LaTeX

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_SYMBOLS = {
    "±": r"$\pm$",
    WITHIN: r"\checkmark",
    OUTSIDE: r"$\times$",
    MISSING: "---",
    INCOMPLETE_MARK: r"$^\dagger$",
    DERIVED_MARK: r"$^\ddagger$",
    "×": r"$\times$",
    "`": "",
}


def latex_escape(text: str) -> str:
    """Escapes LaTeX specials and maps the tables' symbols (±, ✓, ✗, —, †, ‡) to LaTeX."""
    # pandas' own to_latex needs jinja2, which this project does not depend on.
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    for sym, tex in _LATEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out


def _latex_table(df: pd.DataFrame, caption: str, label: str, notes: Sequence[str] = ()) -> str:
    cols = list(df.columns)
    lines = [
        "% Requires \\usepackage{booktabs} and \\usepackage{amssymb}.",
        "\\begin{table}[ht]",
        "\\centering",
        "\\small",
        f"\\caption{{{latex_escape(caption)}}}",
        f"\\label{{{label}}}",
        f"\\begin{{tabular}}{{{'l' * max(len(cols), 1)}}}",
        "\\toprule",
        " & ".join(latex_escape(str(c)) for c in cols) + r" \\",
        "\\midrule",
    ]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(latex_escape(str(v)) for v in row) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    for note in notes:
        lines.append(f"\\par\\footnotesize {latex_escape(note)}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Output


def render_tables(best: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK, *, select: str = "test") -> list[Table]:
    """All tables for one benchmark: Table 2, Table 1, the optimizer table and the details (``select``:
    the rule ``best`` was picked by)."""
    return [
        table2(best, benchmark),
        table1(best, benchmark, select=select),
        optimizer_table(best, benchmark, select=select),
        details_table(best, benchmark, select=select),
    ]


def appendix_table(summary: pd.DataFrame, jobs: pd.DataFrame, *, select: str = "test") -> Table:
    """The paper's appendix experiments (A.7 i.i.d. MNIST, A.8 Adam bias correction, A.9 SGD with
    exponential decay): the best grid point of each, ours beside the paper's number.

    A.7's two rows are told apart by the preset that produced the jobs (``+sweep=a7`` with the
    Split-MNIST optimizer grids, ``+sweep=a7_tuned`` with i.i.d.-tuned ones). With
    ``select="validation"`` each row's best is the highest validation mean among its grid points that
    have one (a row without any shows none). Rows draw on the kind of run `grid_runs` picks.
    """
    def keys_of(preset: str) -> set:
        return set(jobs.loc[jobs["preset"] == preset, "hp_key"]) if len(jobs) else set()

    def bias_correction(hp: Any) -> bool:
        return bool(hp.get("optimizer.bias_correction", True)) if isinstance(hp, dict) else True

    # of the kind of run `grid_runs` picks for `select`: a held-out re-run (fewer training examples) never
    # enters a row, nor its count, that the stored grid fills
    s = grid_runs(summary, select)
    experiments = [
        ("A.7", "ReLU, i.i.d. MNIST, Split-MNIST optimizer (+sweep=a7)", "A.7/iid_relu/split_mnist_optimizer",
         (s["benchmark"] == "iid_mnist") & (s["activation"] == "relu") & s["hp_key"].isin(keys_of("a7"))),
        ("A.7", "ReLU, i.i.d. MNIST, i.i.d.-tuned optimizer (+sweep=a7_tuned)", "A.7/iid_relu/iid_tuned",
         (s["benchmark"] == "iid_mnist") & (s["activation"] == "relu") & s["hp_key"].isin(keys_of("a7_tuned"))),
        ("A.8", "Hard ASH + Adam, with bias correction", "A.8/hard_ash_adam/bias_correction",
         (s["benchmark"] == "split_mnist") & (s["activation"] == "hard_ash") & (s["optimizer"] == "adam")
         & s["hyperparameters"].map(bias_correction)),
        ("A.8", "Hard ASH + Adam, without bias correction", "A.8/hard_ash_adam/no_bias_correction",
         (s["benchmark"] == "split_mnist") & (s["activation"] == "hard_ash") & (s["optimizer"] == "adam")
         & ~s["hyperparameters"].map(bias_correction)),
        ("A.9", "Hard ASH + SGD, exponential decay x0.7 / 200 steps", "A.9/hard_ash_sgd/exp_decay",
         (s["benchmark"] == "split_mnist") & (s["activation"] == "hard_ash") & (s["optimizer"] == "sgd_exp_decay")),
    ] if len(s) else []
    display_rows, data_rows = [], []
    for section, label, key, mask in experiments:
        points = _selectable(s[mask], select)
        ref = paper.PAPER_APPENDIX[key]
        win = None
        if len(points):
            win = points.sort_values(["complete", _score(select)[0]], ascending=False).iloc[0]
        mean = math.nan if win is None else float(win["mean"])
        within = within_paper(mean, ref)
        display_rows.append(
            {
                "Appendix": section,
                "Experiment": label,
                "Ours": _ours(win),
                "Grid points": str(int(mask.sum())),
                "Paper": _fmt_paper(ref),
                "Within": _mark(within) or MISSING,
            }
        )
        data_rows.append(
            {
                "experiment": key, "mean": mean, "std": math.nan if win is None else float(win["std"]),
                "hyperparameters": None if win is None else win["hp_key"], "grid_points": int(mask.sum()),
                "paper_mean": ref.mean, "paper_std": ref.std, "within_paper_std": within,
            }
        )
    return Table.of(
        "appendix",
        "Appendix experiments (A.7, A.8, A.9)",
        display_rows, ["Appendix", "Experiment", "Ours", "Grid points", "Paper", "Within"],
        data_rows,
        "Final accuracy (%) of the best grid point of each experiment; "
        f"{MISSING} = not run yet. Within: {WITHIN} = ours within paper mean ± paper std.",
        [],
    )


def metrics_table(summary: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK, *, select: str = "test") -> Table:
    """Continual-learning metrics of each cell's best grid point, mean ± std over its seeds.

    Final accuracy, average accuracy over the tasks after the last one, forgetting, backward
    transfer, learning accuracy (as the result files store them; `load_results` computes them for
    older files) and forward transfer (schema 3 only), the fraction of active hidden units after the
    last task (schema 2 on), and the peak memory and training time per model of its jobs (schema 3).
    """
    best = _for_benchmark(best_per_cell(summary, select=select), benchmark)
    display_rows, data_rows = [], []

    def stat(values: list) -> tuple[float, float]:
        vals = [v for v in values if v is not None and math.isfinite(v)]
        return (float(np.mean(vals)), float(np.std(vals))) if vals else (math.nan, math.nan)

    def fmt(ms: tuple[float, float], scale: float = 100.0) -> str:
        return MISSING if not math.isfinite(ms[0]) else _fmt(scale * ms[0], scale * ms[1])

    order = {a: i for i, a in enumerate(paper.ACTIVATION_ORDER)}
    oorder = {o: i for i, o in enumerate(paper.OPTIMIZER_ORDER)}
    best = best.assign(_a=best["activation"].map(lambda a: order.get(a, 99)), _o=best["optimizer"].map(lambda o: oorder.get(o, 99)))
    for _, cell in best.sort_values(["_a", "_o"]).iterrows():
        if _missing(cell["hp_key"]):
            continue
        point = summary[
            (summary["benchmark"] == benchmark) & (summary["activation"] == cell["activation"])
            & (summary["optimizer"] == cell["optimizer"]) & (summary["hp_key"] == cell["hp_key"])
        ]
        pooled = point.iloc[0]  # the pooled, non-diverged seeds' stored metrics
        active = [a / 100 for a in pooled["active_fraction"] if a is not None]
        avg, fgt, bwt, learn, fwt = (stat(pooled[k]) for k in STORED_METRICS)
        act = stat(active)
        memory, per_model = pooled["peak_memory_mib"], pooled["time_per_model_s"]
        display_rows.append(
            {
                "Activation": paper.activation_name(cell["activation"]),
                "Optimizer": paper.optimizer_name(cell["optimizer"]),
                "Final accuracy": _fmt(cell["mean"], cell["std"]),
                "Average accuracy": fmt(avg),
                "Forgetting": fmt(fgt),
                "BWT": fmt(bwt),
                "Learning accuracy": fmt(learn),
                "FWT": fmt(fwt),
                "Active units (%)": fmt(act),
                "Peak memory (MiB)": f"{memory:.0f}" if math.isfinite(memory) else MISSING,
                "Time per model (s)": f"{per_model:.1f}" if math.isfinite(per_model) else MISSING,
            }
        )
        data_rows.append(
            {
                "benchmark": benchmark, "activation": cell["activation"], "optimizer": cell["optimizer"],
                "hyperparameters": cell["hp_key"], "final_mean": cell["mean"], "final_std": cell["std"],
                "average_accuracy_mean": 100 * avg[0], "average_accuracy_std": 100 * avg[1],
                "forgetting_mean": 100 * fgt[0], "forgetting_std": 100 * fgt[1],
                "bwt_mean": 100 * bwt[0], "bwt_std": 100 * bwt[1],
                "learning_accuracy_mean": 100 * learn[0], "learning_accuracy_std": 100 * learn[1],
                "fwt_mean": 100 * fwt[0], "fwt_std": 100 * fwt[1],
                "active_fraction_mean": act[0], "active_fraction_std": act[1],
                "peak_memory_mib": memory, "time_per_model_s": per_model, "seeds": len(pooled["accuracy_matrix"]),
            }
        )
    columns = ["Activation", "Optimizer", "Final accuracy", "Average accuracy", "Forgetting", "BWT", "Learning accuracy",
               "FWT", "Active units (%)", "Peak memory (MiB)", "Time per model (s)"]
    return Table.of(
        "metrics", f"Continual-learning metrics of each cell's best grid point ({benchmark})", display_rows, columns, data_rows,
        "Percent, mean ± std over seeds. Average accuracy: over all tasks after the last; forgetting: mean "
        "drop from each task's best earlier accuracy to its final one; BWT: mean of final minus "
        "just-trained accuracy (negative = forgetting); learning accuracy: mean accuracy on each task right "
        "after training it; FWT (forward transfer, GEM's): mean over tasks 2..T of the accuracy on a task "
        "after the task before it minus the untrained model's; active units: share of non-zero hidden units "
        "on the test set after the last task; peak memory: the training process's peak resident memory "
        "(largest over the grid point's jobs); time per model: a job's wall time (compilation and evaluation "
        f"included) over the models it trained, mean over its jobs ({MISSING} for results written before a "
        "value was measured).",
        [],
    )


def _strategy_of(hp: Any) -> str:
    return str(hp.get("strategy.name", "none")) if isinstance(hp, dict) else "none"


#: Optimizers that exist for an appendix experiment only (shown in the appendix table, not Table 2).
APPENDIX_OPTIMIZERS = ("sgd_exp_decay",)


def _model_of(hp: Any) -> str:
    return str(hp.get("model.name", "mlp")) if isinstance(hp, dict) else "mlp"


def _epochs_of(hp: Any) -> int:
    return int(hp.get("benchmark.epochs_per_task", 1)) if isinstance(hp, dict) else 1


def _paper_mlp(hp: Any) -> bool:
    """Whether a grid point's model is the paper's MLP: one hidden layer of 1,000 units, weight norm
    on the first layer only (absent keys are the defaults, which are)."""
    if not isinstance(hp, dict):
        return True
    if _model_of(hp) != "mlp":
        return False
    size = hp.get("model.hidden_size", 1000)
    size = size[0] if isinstance(size, (list, tuple)) and len(size) == 1 else size
    return size == 1000 and list(hp.get("model.weight_norm", [True, False])) == [True, False]


def _paper_variant(hp: Any) -> bool:
    """The paper's main setting: the paper's MLP, one epoch per task, no strategy, and the standard
    optimizers (Adam with bias correction; A.8's variant without it belongs to the appendix table)."""
    if not isinstance(hp, dict):
        return True
    return (
        _strategy_of(hp) == "none" and hp.get("optimizer.bias_correction", True) is not False
        and _paper_mlp(hp) and _epochs_of(hp) == 1
    )


#: The rows of the paper's Table 1 that cite other work, and the rows this project adds, as
#: (row name, name in `paper.PAPER_TABLE1_CITED` or None, model, activation or None for "the
#: model's own", strategy). EWC, online EWC and MAS run on the plain ReLU MLP, as the cited EWC.
COMPARISON_ROWS: tuple[tuple[str, str | None, str, str | None, str], ...] = (
    ("EWC", "EWC", "mlp", "relu", "ewc"),
    ("Online EWC", None, "mlp", "relu", "online_ewc"),
    ("MAS", None, "mlp", "relu", "mas"),
    ("SDMLP", "SDMLP", "sdmlp", None, "none"),
    ("SDMLP + EWC", "SDMLP+EWC", "sdmlp", None, "ewc"),
    ("FlyModel", "FlyModel", "flymodel", None, "none"),
    ("Hard ASH + EWC", None, "mlp", "hard_ash", "ewc"),
)


def comparison_table(summary: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK, *, select: str = "test") -> Table | None:
    """Table 1's comparison rows (EWC, online EWC, MAS, SDMLP, SDMLP + EWC, FlyModel, Hard ASH + EWC)
    run here, one row per epoch budget, beside the figures the paper cites; None when none ran.

    Each row is the best grid point over every optimizer and strategy strength that ran for it.
    """
    if summary.empty:
        return None
    s = summary[summary["benchmark"] == benchmark]
    hp = s["hyperparameters"]
    s = s.assign(_model=hp.map(_model_of), _strategy=hp.map(_strategy_of), _epochs=hp.map(_epochs_of))
    cited = {c.name: c for c in paper.PAPER_TABLE1_CITED} if benchmark == paper.PAPER_BENCHMARK else {}
    display_rows, data_rows = [], []
    for name, cited_name, model, activation, strategy in COMPARISON_ROWS:
        rows = s[(s["_model"] == model) & (s["_strategy"] == strategy)]
        if activation is not None:
            rows = rows[rows["activation"] == activation]
        c = cited.get(cited_name) if cited_name else None
        for epochs, group in rows.groupby("_epochs", sort=True):
            cells = best_per_cell(group.drop(columns=["_model", "_strategy", "_epochs"]), select=select)
            cells = cells[cells["hp_key"].notna()]
            best = None if cells.empty else _ranked(cells, select).iloc[0]
            paper_text = MISSING if c is None else (
                f"{c.accuracy:g} ({c.epochs} epoch{'s' if c.epochs != 1 else ''}"
                + (f", {paper.optimizer_name(c.optimizer)})" if c.optimizer else ", associative rule)")
            )
            display_rows.append(
                {
                    "Method": name,
                    "Epochs/task": str(epochs),
                    "Ours": _ours(best),
                    "Optimizer": MISSING if best is None else paper.optimizer_name(best["optimizer"]),
                    "Paper cites": paper_text,
                    "Grid points": str(len(group)),
                    "Winning hyperparameters": MISSING if best is None else _own_keys(best["hp_key"]),
                }
            )
            data_rows.append(
                {
                    "benchmark": benchmark, "method": name, "epochs_per_task": int(epochs),
                    "mean": math.nan if best is None else best["mean"], "std": math.nan if best is None else best["std"],
                    "optimizer": None if best is None else best["optimizer"],
                    "hyperparameters": None if best is None else best["hp_key"],
                    "cited": math.nan if c is None else c.accuracy, "cited_epochs": None if c is None else c.epochs,
                    "grid_points": len(group),
                }
            )
    if not display_rows:
        return None
    return Table.of(
        "table1_comparison",
        f"Table 1, comparison rows: other continual learners run here ({benchmark})",
        display_rows, ["Method", "Epochs/task", "Ours", "Optimizer", "Paper cites", "Grid points", "Winning hyperparameters"],
        data_rows,
        "Final accuracy (%) of the best grid point of each method at each epoch budget, mean ± std "
        "over seeds, on this project's protocol (batch 64, the seeds' own task orders).",
        [
            "The paper cites these figures from other work (EWC, SDMLP, SDMLP + EWC: Bricken et al. 2023, "
            "500 epochs per task; FlyModel: Shen et al. 2021, 1 epoch); they are not its own runs, so no "
            "within-std mark is given. Bricken et al. also used batch 128 and 10,000 neurons for SDMLP "
            "without EWC; see src/cl_sweep/models/sdmlp.py and src/cl_sweep/training/fly.py for each model's choices.",
        ],
    )


def _own_keys(hp_key: str) -> str:
    """The part of a grid point's key that a comparison row varies (optimizer, strategy, model keys)."""
    keep = ("optimizer.learning_rate", "optimizer.momentum", "strategy.lambda", "strategy.gamma", "model.k", "model.expansion")
    kv = [item for item in str(hp_key).split(", ") if item.split("=", 1)[0] in keep]
    return ", ".join(kv) or DEFAULTS_KEY_LABEL


#: The source prefix of an Optuna search's jobs (`_source`: ``+search=a6_wide`` -> ``search/a6_wide``).
SEARCH_SOURCE = "search/"


def _searched(sources: Any) -> bool:
    """Whether a grid point comes from Optuna searches only (every source a ``search/...`` one)."""
    return bool(sources) and all(str(s).startswith(SEARCH_SOURCE) for s in sources)


def _validation_fraction(hp: Any) -> float:
    """The share of each task's training examples a grid point held out (``benchmark.validation_fraction``; 0: none)."""
    value = hp.get("benchmark.validation_fraction", 0) if isinstance(hp, dict) else 0
    return float(value or 0)


def grid_runs(summary: pd.DataFrame, select: str = "test") -> pd.DataFrame:
    """The grid points a table may pick a cell's winner from: per benchmark, those of the first kind it
    has, in this order: runs on all training examples (the paper's protocol), runs that held examples
    out (``benchmark.validation_fraction`` > 0; first under ``select="validation"``, the only ones it can
    pick), and Optuna searches (``+search=...``, every source a ``search/...`` one).

    So a search's best trial, picked by the same test accuracy among many more points, never becomes a
    cell that the A.6 grid defines (Table 2 stays the grid's; `search_table` shows it beside), and runs
    trained on fewer examples never mix into the paper's cells (`selection_table` compares them). A
    folder of one kind alone (one study, one held-out sweep) keeps it: it is all there is.
    """
    if summary.empty or "sources" not in summary.columns:
        return summary
    searched = summary["sources"].map(_searched)
    held = summary["hyperparameters"].map(_validation_fraction) > 0
    kind = np.where(searched, 2, np.where(held, 1, 0))
    order = (1, 0, 2) if select == "validation" else (0, 1, 2)
    rank = pd.Series([order.index(k) for k in kind], index=summary.index)
    first = rank.groupby(summary["benchmark"]).transform("min")
    return summary[rank == first]


def plain_runs(summary: pd.DataFrame, select: str = "test") -> pd.DataFrame:
    """The grid points of the paper's main setting (Tables 1 and 2): no strategy, standard optimizers,
    and of the kind `grid_runs` picks for ``select``."""
    if summary.empty:
        return summary
    return _paper_setting(grid_runs(summary, select))


def _paper_setting(summary: pd.DataFrame) -> pd.DataFrame:
    """The grid points of the paper's setting (`_paper_variant`), of every kind of run."""
    # A.9's decaying SGD is an appendix variant of SGD, not a column of Table 2.
    return summary[summary["hyperparameters"].map(_paper_variant) & ~summary["optimizer"].isin(APPENDIX_OPTIMIZERS)]


def selection_table(summary: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK) -> Table | None:
    """How optimistic best-of-grid on test is: for every cell of the paper's setting whose grid also ran
    with held-out examples (``benchmark.validation_fraction`` > 0), the stored grid's test-selected best
    (Table 2's cell) beside the held-out runs' best picked by test accuracy and by validation accuracy
    (its test accuracy reported), and the difference between the two picks; None without such runs."""
    if summary.empty:
        return None
    s = _paper_setting(summary[summary["benchmark"] == benchmark])
    if "sources" in s.columns:
        s = s[~s["sources"].map(_searched)]
    fraction = s["hyperparameters"].map(_validation_fraction)
    if not (fraction > 0).any():
        return None
    stored = {(r.activation, r.optimizer): r for _, r in best_per_cell(s[fraction == 0]).iterrows()}
    display_rows, data_rows = [], []
    for f in sorted(set(fraction[fraction > 0])):
        held = s[fraction == f]
        by_test, by_val = best_per_cell(held), best_per_cell(held, select="validation")
        for (_, t), (_, v) in zip(by_test.iterrows(), by_val.iterrows()):
            act, opt = t["activation"], t["optimizer"]
            base = stored.get((act, opt))
            expected = paper.a6_cell_size(act, opt) if benchmark == paper.PAPER_BENCHMARK else None
            coverage = f"{int(t['n_grid_points'])}" + (f"/{expected}" if expected else "")
            optimism = float(t["mean"]) - float(v["mean"])
            display_rows.append(
                {
                    "Activation": paper.activation_name(act),
                    "Optimizer": paper.optimizer_name(opt),
                    "Held out": f"{f:g}",
                    "Grid points": coverage,
                    "All examples, by test (Table 2)": _ours(base),
                    "Held out, by test": _ours(t),
                    "Held out, by validation": _ours(v),
                    "Optimism": f"{optimism:+.{_DISPLAY_DECIMALS}f}" if math.isfinite(optimism) else MISSING,
                    "Same point": "yes" if t["hp_key"] == v["hp_key"] else "no",
                }
            )
            data_rows.append(
                {
                    "benchmark": benchmark, "activation": act, "optimizer": opt, "validation_fraction": f,
                    "grid_points": int(t["n_grid_points"]), "a6_grid_points": expected,
                    "stored_mean": math.nan if base is None else float(base["mean"]),
                    "stored_std": math.nan if base is None else float(base["std"]),
                    "by_test_mean": float(t["mean"]), "by_test_std": float(t["std"]),
                    "by_validation_mean": float(v["mean"]), "by_validation_std": float(v["std"]),
                    "by_validation_val_mean": float(v["val_mean"]), "optimism": optimism,
                    "same_point": t["hp_key"] == v["hp_key"],
                    "by_test_hyperparameters": t["hp_key"], "by_validation_hyperparameters": v["hp_key"],
                }
            )
    return Table.of(
        "selection",
        f"Honest model selection: best grid point by test vs by validation accuracy ({benchmark})",
        display_rows,
        ["Activation", "Optimizer", "Held out", "Grid points", "All examples, by test (Table 2)", "Held out, by test",
         "Held out, by validation", "Optimism", "Same point"],
        data_rows,
        "Final test accuracy (%), mean ± std over seeds, of the best grid point of each cell: the stored grid "
        "trained on every example and picked by test accuracy (the paper's rule, Table 2), and the same grid "
        "re-run holding out a share of each task's training examples, picked by test accuracy and by the "
        "held-out (validation) accuracy. Optimism = by test - by validation on the same runs: how much picking "
        "on the test set flatters a cell. Grid points: of the held-out runs (k/N: k of the cell's N A.6 points).",
        [
            "The held-out runs never train on the held-out examples, and the 2-seed early-stop rule reads their "
            "accuracy, so the validation pick never sees the test set. The held-out runs are not pooled into "
            "the other tables (grid_runs)."
        ],
    )


def _short_float(x: float) -> str:
    """3 significant digits (``0.00020923190206007523`` -> ``0.000209``), or, just below 1 (a momentum, a
    decay, Adam's b2), 3 of its distance to 1 (``0.999750123`` -> ``0.99975``), never rounding up to 1."""
    if 0.9 < x < 1:
        digits = 2 - math.floor(math.log10(1 - x))
        return f"{x:.{digits}f}".rstrip("0")
    return f"{x:.3g}"


def _short_values(keys: str) -> str:
    """``k=v, ...`` with each sampled float shortened by `_short_float`."""
    def short(kv: str) -> str:
        k, sep, v = kv.partition("=")
        try:
            return f"{k}={_short_float(float(v))}" if sep and not v.lstrip("-").isdigit() else kv
        except ValueError:
            return kv
    return ", ".join(short(kv) for kv in keys.split(", "))


def search_table(summary: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK, *, select: str = "test") -> Table | None:
    """Wider searches beside the grid: for every (activation, optimizer) cell of the paper's setting that
    an Optuna search (``+search=...``) ran, the search's best trial beside the grid's best (Table 2's
    cell) and the paper's value; None when no search ran or the benchmark has searches only.

    A trial is a grid point of its own (its sampled values); pruned trials are counted, never averaged
    in; the best is picked by ``select`` among the complete ones, as in `best_per_cell`.
    """
    if summary.empty or "sources" not in summary.columns:
        return None
    s = _paper_setting(summary[summary["benchmark"] == benchmark])
    searched = s["sources"].map(_searched)
    if not searched.any() or searched.all():
        return None
    grid = {(r.activation, r.optimizer): r for _, r in best_per_cell(grid_runs(s[~searched], select), select=select).iterrows()}
    ref = _paper_table2(benchmark)
    display_rows, data_rows = [], []
    for _, found in best_per_cell(s[searched], select=select).iterrows():
        act, opt = found["activation"], found["optimizer"]
        base, pv = grid.get((act, opt)), ref.get(act, {}).get(opt)
        mean = float(found["mean"])
        within = within_paper(mean, pv)
        base_mean = math.nan if base is None else float(base["mean"])
        diff = mean - base_mean
        sources = sorted({str(x) for x in found["sources"]})
        display_rows.append(
            {
                "Activation": paper.activation_name(act),
                "Optimizer": paper.optimizer_name(opt),
                "Grid (Table 2)": _ours(base) + ("" if base is None else f" [{int(base['n_grid_points'])}]"),
                "Search": _ours(found) + (f" {_mark(within)}" if within is not None else ""),
                "Search - grid": f"{diff:+.{_DISPLAY_DECIMALS}f}" if math.isfinite(diff) else MISSING,
                "Paper": _fmt_paper(pv),
                "Trials": f"{int(found['n_grid_points'])} ({int(found['n_pruned'])} pruned)",
                "Best trial": MISSING if found["hp_key"] is None else _short_values(_component_keys(found["hp_key"])),
            }
        )
        data_rows.append(
            {
                "benchmark": benchmark, "activation": act, "optimizer": opt,
                "grid_mean": base_mean, "grid_std": math.nan if base is None else float(base["std"]),
                "grid_points": 0 if base is None else int(base["n_grid_points"]),
                "search_mean": mean, "search_std": float(found["std"]), "search_seeds": int(found["n_seeds"]),
                "diff": diff, "paper_mean": math.nan if pv is None else pv.mean,
                "paper_std": math.nan if pv is None else pv.std, "within_paper_std": within,
                "trials": int(found["n_grid_points"]), "pruned": int(found["n_pruned"]),
                "hyperparameters": found["hp_key"], "sources": ";".join(sources),
            }
        )
    return Table.of(
        "search",
        f"Wider searches beside the grid ({benchmark})",
        display_rows,
        ["Activation", "Optimizer", "Grid (Table 2)", "Search", "Search - grid", "Paper", "Trials", "Best trial"],
        data_rows,
        "Final accuracy (%), mean ± std over seeds: the grid's best point (Table 2's cell; in brackets its "
        "grid points) beside the best trial of an Optuna search (`+search=...`) on the same cell"
        + (f"; {WITHIN}/{OUTSIDE} = the search's best within/outside the paper's mean ± std." if ref else "."),
        [
            "The tables pick their cells from the grid only: a search's best trial is chosen by the same test "
            "accuracy among many more points, so it is shown here, beside the grid, and never becomes a cell. "
            "Pruned trials are counted, not averaged in."
        ],
    )


def _best_beside(cells: pd.DataFrame, plain: pd.DataFrame, by: list[str], own: str, select: str = "test") -> Iterator[tuple]:
    """The strategies' and models' tables' rows: for each group of ``cells`` by ``by`` (in sorted order),
    ``(key, cell, its best grid point, the best of plain in the same activation and optimizer or None,
    the best point's own keys that start with the prefix ``own`` but its name)``. Columns of ``cells``
    that start with ``_`` are helpers, dropped before the best point is chosen."""
    plain_best = {(r.activation, r.optimizer): r for _, r in best_per_cell(plain, select=select).iterrows()}
    helpers = [c for c in cells.columns if c.startswith("_")]
    for key, cell in cells.groupby(by, sort=True):
        best = best_per_cell(cell.drop(columns=helpers), select=select).iloc[0]
        base = plain_best.get((best["activation"], best["optimizer"]))
        keys = [kv for kv in str(best["hp_key"]).split(", ") if kv.startswith(own) and not kv.startswith(f"{own}name")]
        yield key, cell, best, base, ", ".join(keys) or DEFAULTS_KEY_LABEL


def strategies_table(summary: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK, *, select: str = "test") -> Table | None:
    """Best grid point per (activation, optimizer, strategy) for runs with a strategy, beside the same
    cell without one; None when no run used a strategy."""
    if summary.empty:
        return None
    s = summary[(summary["benchmark"] == benchmark)]
    s = s[s["hyperparameters"].map(_epochs_of) == 1]  # other epoch budgets: the comparison table
    s = s.assign(_strategy=s["hyperparameters"].map(_strategy_of))
    with_strategy = s[s["_strategy"] != "none"]
    if with_strategy.empty:
        return None
    def label(key, cell):
        act, opt, strat = key
        return ({"Activation": paper.activation_name(act), "Optimizer": paper.optimizer_name(opt),
                 "Strategy": paper.strategy_name(strat)},
                {"benchmark": benchmark, "activation": act, "optimizer": opt, "strategy": strat})

    return _beside_table(
        "strategies", f"Continual-learning strategies ({benchmark})",
        _best_beside(with_strategy, plain_runs(s.drop(columns="_strategy"), select), ["activation", "optimizer", "_strategy"],
                     "strategy.", select),
        label, ("Without strategy", "without_strategy_mean"), "Strategy hyperparameters",
        "Final accuracy (%) of the best grid point with each strategy, beside the best of the same "
        "activation and optimizer without one. Tables 1 and 2 hold runs without a strategy only.",
    )


def _beside_table(name: str, title: str, groups: Iterable[tuple], label, base: tuple[str, str], own: str,
                  note: str) -> Table:
    """The strategies' and the models' tables: for each group of `_best_beside`, its labels (``label(key,
    cell) -> (shown, data)``), the best grid point beside the plain one (``base``: that column's title
    and data key), the best point's ``own`` keys and the cell's grid points."""
    display_rows, data_rows, labels = [], [], []
    for key, cell, best, plain, keys in groups:
        shown, data = label(key, cell)
        labels = list(shown)
        display_rows.append({**shown, "Best": _ours(best), base[0]: _ours(plain), own: keys, "Grid points": str(len(cell))})
        data_rows.append({**data, "mean": best["mean"], "std": best["std"], "hyperparameters": best["hp_key"],
                          base[1]: math.nan if plain is None else plain["mean"], "grid_points": len(cell)})
    columns = [*labels, "Best", base[0], own, "Grid points"]
    return Table.of(name, title, display_rows, columns, data_rows, note)


def _architecture(hp: Any) -> str:
    """What tells one model of a name from another in the models table: an MLP's widths, else the name."""
    model = _model_of(hp)
    if model == "mlp" and isinstance(hp, dict):
        return f"mlp {hp.get('model.hidden_size', 1000)}"
    return model


def models_table(summary: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK, *, select: str = "test") -> Table | None:
    """Best grid point per (model, activation, optimizer) for models other than the paper's MLP (a
    deeper or wider MLP, a user's registered model), beside the paper's MLP in the same cell. The
    built-in SDMLP and FlyModel are Table 1's comparison rows instead. None when no such run exists."""
    if summary.empty:
        return None
    comparison_models = {model for _, _, model, _, _ in COMPARISON_ROWS if model != "mlp"}
    s = summary[summary["benchmark"] == benchmark]
    hp = s["hyperparameters"]
    s = s[(hp.map(_strategy_of) == "none") & (hp.map(_epochs_of) == 1) & ~hp.map(_paper_mlp)
          & ~hp.map(_model_of).isin(comparison_models)]
    if s.empty:
        return None
    s = s.assign(_arch=s["hyperparameters"].map(_architecture), _model=s["hyperparameters"].map(_model_of))
    def label(key, cell):
        arch, act, opt = key
        model = cell["_model"].iloc[0]
        return ({"Model": paper.model_name(model), "Activation": paper.activation_name(act),
                 "Optimizer": paper.optimizer_name(opt)},
                {"benchmark": benchmark, "model": model, "architecture": arch, "activation": act, "optimizer": opt})

    return _beside_table(
        "models", f"Other models ({benchmark})",
        _best_beside(s, plain_runs(summary[summary["benchmark"] == benchmark], select), ["_arch", "activation", "optimizer"],
                     "model.", select),
        label, ("Paper's MLP", "paper_mlp_mean"), "Model hyperparameters",
        "Final accuracy (%) of the best grid point of each model other than the paper's MLP (one hidden "
        "layer of 1,000, weight norm on it), one epoch per task, no strategy, beside the best of the paper's "
        "MLP with the same activation and optimizer. Tables 1 and 2 hold the paper's MLP only.",
    )


def pareto_front(points: pd.DataFrame, maximize: str = "mean", minimize: str = "active_mean") -> pd.Series:
    """True for each row no other row dominates: none has ``maximize`` at least as high and
    ``minimize`` at least as low, one of them strictly (rows with a NaN in either are never on it).

    Args:
        points: any frame with the two columns (e.g. `summarize`'s grid points).
        maximize: the column to maximise (default: final accuracy, ``mean``).
        minimize: the column to minimise (default: the active fraction, ``active_mean``).
    """
    y = points[maximize].to_numpy(float)
    x = points[minimize].to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    on = np.zeros(len(points), bool)
    yo, xo = y[ok], x[ok]
    idx = np.flatnonzero(ok)
    for k in range(len(yo)):
        dominated = (yo >= yo[k]) & (xo <= xo[k]) & ((yo > yo[k]) | (xo < xo[k]))
        on[idx[k]] = not dominated.any()
    return pd.Series(on, index=points.index)


def sparsity_candidates(summary: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK) -> pd.DataFrame:
    """The grid points the accuracy-against-sparsity view compares: the paper's setting (`plain_runs`) on
    ``benchmark``, finished (complete or early-stopped), not diverged, with a measured active fraction."""
    points = plain_runs(summary)
    if points.empty:
        return points
    points = points[
        (points["benchmark"] == benchmark) & (points["status"] == "ok") & points["complete"] & points["active_mean"].notna()
    ]
    return points.assign(pareto=pareto_front(points)) if not points.empty else points.assign(pareto=pd.Series(dtype=bool))


def pareto_table(summary: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK) -> Table | None:
    """Accuracy against sparsity (the paper's theme): the grid points no other beats on both final accuracy
    (higher) and the share of active hidden units after the last task (lower); None without such points."""
    points = sparsity_candidates(summary, benchmark)
    if points.empty:
        return None
    front = points[points["pareto"]].sort_values(["mean", "active_mean"], ascending=[False, True], kind="stable")
    display = pd.DataFrame(
        {
            "Activation": front["activation"].map(paper.activation_name),
            "Optimizer": front["optimizer"].map(paper.optimizer_name),
            "Grid point": front["hp_key"].map(_component_keys),
            "Final accuracy": [_fmt(m, sd) for m, sd in zip(front["mean"], front["std"])],
            "Active units (%)": front["active_mean"].map(lambda v: f"{v:.2f}"),
            "Seeds": [f"{n}{' (early-stopped)' if e else ''}" for n, e in zip(front["n_seeds"], front["early_stopped"])],
        }
    )
    data = front[["benchmark", "activation", "optimizer", "hp_key", "mean", "std", "active_mean", "n_seeds", "early_stopped"]]
    return Table(
        "pareto",
        f"Accuracy against sparsity: the Pareto front of {len(points)} grid points ({benchmark})",
        display.reset_index(drop=True),
        data.rename(columns={"hp_key": "hyperparameters", "mean": "final_mean", "std": "final_std",
                             "active_mean": "active_percent"}).reset_index(drop=True),
        "Each row: a grid point that no other one beats on both final accuracy (higher) and active hidden "
        "units after the last task (lower, mean over its seeds, measured on the test set). Best accuracy first"
        + ("; `figures/pareto_accuracy_sparsity.png` draws every grid point with this front." if benchmark == paper.PAPER_BENCHMARK else "."),
        [],
    )


def write_tables(
    summary: pd.DataFrame,
    out_dir: str | os.PathLike = "tables",
    *,
    benchmark: str = paper.PAPER_BENCHMARK,
    bad_files: Iterable[tuple[Path, str]] = (),
    jobs: pd.DataFrame | None = None,
    select: str = "test",
) -> str:
    """Writes every table as ``NAME.md``, ``NAME.csv`` and ``NAME.tex`` under ``out_dir``.

    Files: ``table2``, ``table1``, ``optimizers``, ``details``, plus ``problems.md``/``.csv``,
    ``grid_points.csv`` (every grid point of ``benchmark``; the problems too are this benchmark's
    only) and ``tables.md`` (everything in one).
    The CSVs hold the numbers (ours, paper, difference, within-std flag), not the display text.

    Args:
        summary: the frame from `summarize`.
        out_dir: the output folder (created if missing).
        benchmark: which benchmark to tabulate.
        bad_files: the unreadable files from `load_results`, for the problems list.
        select: how each table picks its best grid points (`best_per_cell`): ``"test"``, the paper's
            rule, or ``"validation"``, which every table then names in a note (the Pareto front is
            not a selection and stays on test accuracy).

    Returns:
        The Markdown of all tables and the problems list (what ``tables.md`` holds).

    Raises:
        ValueError: a bad ``select``, or cells without a validation accuracy under ``validation``
            (nothing is written then).
    """
    check_select(select)
    out = Path(out_dir)
    everything = summary  # the appendix table (A.7 runs on i.i.d. MNIST) spans benchmarks
    full = summary[summary["benchmark"] == benchmark] if not summary.empty else summary  # this benchmark's rows only
    summary = plain_runs(full, select)  # the paper's tables compare activations and optimizers alone
    best = best_per_cell(summary, select=select)
    sections = [f"# Results: {benchmark}", ""]
    extra = [metrics_table(summary, benchmark, select=select)]
    if (strategies := strategies_table(full, benchmark, select=select)) is not None:
        extra.append(strategies)
    if (models := models_table(full, benchmark, select=select)) is not None:
        extra.append(models)
    if (comparison := comparison_table(full, benchmark, select=select)) is not None:
        extra.append(comparison)
    if (pareto := pareto_table(full, benchmark)) is not None:
        extra.append(pareto)
    if (searches := search_table(full, benchmark, select=select)) is not None:
        extra.append(searches)
    if (selection := selection_table(full, benchmark)) is not None:
        extra.append(selection)
    if jobs is not None and benchmark == paper.PAPER_BENCHMARK:
        extra.append(appendix_table(everything, jobs, select=select))
    out.mkdir(parents=True, exist_ok=True)
    for table in [*render_tables(best, benchmark, select=select), *extra]:
        if select != "test" and table.name not in ("pareto", "selection"):  # the paper's rule goes unsaid, as it always has
            table.notes = [*table.notes, SELECTION_NOTES[select]]
        md = table.to_markdown()
        (out / f"{table.name}.md").write_text(md)
        table.data.to_csv(out / f"{table.name}.csv", index=False)
        (out / f"{table.name}.tex").write_text(table.to_latex())
        sections.append(md)
    items = problems(full, bad_files)
    problems_md = problems_markdown(items)
    (out / "problems.md").write_text(problems_md)
    pd.DataFrame(items, columns=["kind", "message"]).to_csv(out / "problems.csv", index=False)
    grid = without_empty_validation(full.drop(columns=["hyperparameters", "accuracy_matrix", *STORED_METRICS])).assign(
        paths=full["paths"].map(lambda ps: ";".join(map(str, ps))), sources=full["sources"].map(";".join)
    )
    grid.to_csv(out / "grid_points.csv", index=False)
    sections.append(problems_md)
    text = "\n".join(sections)
    (out / "tables.md").write_text(text)
    return text


def benchmark_folder(benchmark: str) -> str:
    """The folder of a benchmark's tables under the output folder: its name, path-safe."""
    return benchmark.replace(":", "_").replace("/", "_")


def write_index(summary: pd.DataFrame, out_dir: Path, benchmarks: Sequence[str], bad_files: Iterable[tuple[Path, str]],
                select: str = "test") -> Path:
    """``README.md`` of the output folder: one line per benchmark folder (grid points, seeds, its Table 2's
    best cell, picked by ``select``) and the result files that could not be read (listed here only)."""
    tops = {}
    for b in benchmarks:  # every winner first: a refused selection writes nothing
        best = best_per_cell(plain_runs(summary[summary["benchmark"] == b], select), select=select)
        tops[b] = best_over(best, "benchmark", select=select) if not best.empty else best
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Tables", "", "One folder per benchmark, written by `make tables` from the stored results "
             "(`table2`, `table1`, `optimizers`, `details`, `metrics`, `pareto` and the rest, each as `.md`, `.csv` "
             "and `.tex`; `tables.md` holds them all, `problems.md` what is missing or wrong, `grid_points.csv` every "
             "grid point).", "", "| benchmark | grid points | seeds run | best cell of Table 2 |", "|---|---|---|---|"]
    for b in benchmarks:
        rows = summary[summary["benchmark"] == b]
        top = MISSING
        if not tops[b].empty:
            r = tops[b].iloc[0]
            top = f"{paper.activation_name(r['activation'])} + {paper.optimizer_name(r['optimizer'])}: {_fmt(r['mean'], r['std'])}"
        lines.append(f"| [{b}]({benchmark_folder(b)}/tables.md) | {len(rows)} | {int(rows['n_seeds'].sum())} | {top} |")
    if select != "test":
        lines += ["", SELECTION_NOTES[select]]
    bad = [("unreadable", f"`{p}`: {reason}") for p, reason in bad_files]
    lines += ["", problems_markdown(bad) if bad else "No unreadable result files."]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _error(message: str) -> int:
    print(f"cl_sweep.analysis.tables: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: aggregate result files into tables; see ``python -m cl_sweep.analysis.tables --help``.

    Returns:
        0 on success (also when some files were unreadable; they are listed under Problems),
        2 when a results folder is missing, holds no result files, none of them can be read, or
        none is for the requested benchmark.
    """
    parser = argparse.ArgumentParser(
        prog="python -m cl_sweep.analysis.tables",
        description="Aggregate result.json files into the Hard ASH paper's tables.",
    )
    parser.add_argument(
        "results", nargs="*", default=["results"],
        help="folders searched (recursively) for result.json (default: results/)",
    )
    parser.add_argument("--out", default="tables", help="output folder (default: tables/)")
    parser.add_argument(
        "--benchmark", default=None,
        help="benchmark to tabulate into --out itself (default: every benchmark found, each into "
        "--out/<benchmark>/, with an index --out/README.md)",
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="do not write the table2_heatmap.png of each benchmark folder"
    )
    parser.add_argument(
        "--to-study", metavar="STORAGE", default=None,
        help="instead of tables, write each (benchmark, activation, optimizer) cell's grid points as an Optuna "
        "study into this storage URL (e.g. sqlite:///grid.db), for optuna-dashboard (make dashboard STORAGE=...)",
    )
    parser.add_argument(
        "--pool", default=POOL_ALL, metavar="all|none|A,B",
        help="which sources (a result's tag=, else its +sweep=/+search= preset) pool their seeds into one grid point: "
        "all (default), none (each source apart), or a comma-separated list pooled together (the rest apart); "
        "the details table and Problems say what was pooled",
    )
    parser.add_argument(
        "--select", choices=SELECT, default="test",
        help="how each cell's best grid point is picked: test (default, the paper's rule: the highest test "
        "accuracy) or validation (the highest accuracy on the held-out examples of benchmark.validation_fraction; "
        "its test accuracy is reported, and the tables say so in a note)",
    )
    parser.add_argument(
        "--plugins", nargs="*", default=[],
        help="plugin modules or .py files whose components' labels name their rows (installed "
        "cl_sweep.plugins entry points are always loaded)",
    )
    args = parser.parse_args(argv)
    from cl_sweep.components.plugins import PluginError, load_plugins

    try:
        load_plugins(args.plugins)
    except PluginError as e:
        print(f"cl_sweep.analysis.tables: {e}", file=sys.stderr)
        return 2

    missing = [r for r in args.results if not Path(r).exists()]
    if missing:
        return _error(f"results folder {', '.join(map(str, missing))} does not exist")
    n_files = sum(1 for _ in find_result_files(*args.results))
    if n_files == 0:
        return _error(f"no result.json files under {', '.join(map(str, args.results))}")
    jobs, bad = load_results(*args.results)
    if jobs.empty:
        for path, reason in bad:
            print(f"{path}: {reason}", file=sys.stderr)
        return _error(f"none of the {n_files} result files could be read (reasons above)")
    found = sorted(set(jobs["benchmark"]))
    if args.benchmark is not None and args.benchmark not in found:
        return _error(f"no results for benchmark {args.benchmark!r} (found: {', '.join(found)})")
    if args.benchmark is not None:
        targets = [(args.benchmark, Path(args.out))]
    else:  # every benchmark in a folder of its own, the paper's first; an index page beside them
        order = sorted(found, key=lambda b: (b != paper.PAPER_BENCHMARK, b))
        targets = [(b, Path(args.out) / benchmark_folder(b)) for b in order]

    try:
        summary = summarize(jobs, pool=args.pool)
    except ValueError as e:
        return _error(f"--pool: {e}")
    if args.to_study is None:
        try:  # a cell that cannot be picked by the rule is refused before anything is written
            best_per_cell(summary[summary["benchmark"].isin([b for b, _ in targets])], select=args.select)
        except ValueError as e:
            return _error(str(e))
    if args.to_study is None and args.benchmark is None:
        print(write_index(summary, Path(args.out), [b for b, _ in targets], bad, select=args.select).read_text())
    if args.to_study is not None:
        from cl_sweep.analysis.studies import export_to_study

        chosen = summary if args.benchmark is None else summary[summary["benchmark"] == args.benchmark]
        try:
            written = export_to_study(chosen, args.to_study)
        except Exception as e:  # a bad URL, an unreachable server: one paragraph, nothing half-said
            return _error(f"--to-study {args.to_study!r}: cannot write the studies ({type(e).__name__}: {e})")
        for name, n in written:
            print(f"{name}: {n} trials")
        print(f"cl_sweep.analysis.tables: wrote {len(written)} studies, {sum(n for _, n in written)} trials, into {args.to_study}",
              file=sys.stderr)
        return 0
    for benchmark, out in targets:  # unreadable files are listed once: in the index, or with the one benchmark
        try:
            text = write_tables(summary, out, benchmark=benchmark, bad_files=bad if args.benchmark else (), jobs=jobs,
                                select=args.select)
        except ValueError as e:  # a table's own grid points without a validation accuracy (select validation)
            return _error(f"{out}: {e}")
        print(text)
    if bad:
        print(
            f"cl_sweep.analysis.tables: warning: {len(bad)} of {n_files} result files could not be read "
            "(listed under Problems)",
            file=sys.stderr,
        )
    if not args.no_plots:
        from cl_sweep.analysis import plots  # matplotlib is slow to import; only load it when plotting

        best = best_per_cell(plain_runs(summary, args.select), select=args.select)
        for benchmark, out in targets:
            if (best["benchmark"] == benchmark).any():
                png = plots.table2_heatmap(best, out / "table2_heatmap.png", benchmark=benchmark)
                print(f"cl_sweep.analysis.tables: wrote {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
