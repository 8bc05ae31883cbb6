"""The analysis API that notebooks and scripts use: result folders -> frames -> the best grid points.

    from cl_sweep import analysis
    jobs, problems = analysis.load("results")      # one row per result file (and the files it could not use)
    seeds = analysis.per_seed(jobs)                # one row per seed (its matrix and stored metrics)
    points = analysis.summarize(jobs)              # one row per grid point, seeds pooled (mean ± std, %)
    cells = analysis.best(analysis.paper_setting(points))  # Table 2's winners; per=("benchmark", "activation"): Table 1's

Everything `make tables` and `make figures` show comes from these frames: the result files are read
once, by `load` (accuracy matrices, active fractions and all), and nothing downstream re-reads them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from cl_sweep.analysis import tables

__all__ = ["CELL", "best", "load", "paper_setting", "per_seed", "summarize"]

#: A cell of Table 2: the grid points of one benchmark, activation and optimizer.
CELL = ("benchmark", "activation", "optimizer")


def load(*folders: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every ``result.json`` under ``folders`` (any nesting; default ``results``).

    Returns:
        ``(jobs, problems)``: ``jobs`` has one row per usable file, the columns
        `tables.LOAD_COLUMNS` (accuracies in percent, each seed's accuracy matrix in 0-1 with NaN
        where a task was not evaluated, its active fraction after the last task in percent);
        ``problems`` one row per file that could not be used, with its ``path`` and ``reason``.
    """
    jobs, bad = tables.load_results(*(folders or ("results",)))
    return jobs, pd.DataFrame([(str(p), why) for p, why in bad], columns=["path", "reason"])


#: `per_seed`'s columns that hold one value per seed in `load`'s frame.
PER_SEED = ("seeds", "diverged", "final_accuracy", "active_fraction", "accuracy_matrix", *tables.STORED_METRICS,
            "validation_accuracy")


def per_seed(jobs: pd.DataFrame) -> pd.DataFrame:
    """`load`'s jobs with one row per (job, seed): the job's columns, and per seed its ``seed``,
    ``diverged``, ``final_accuracy`` and ``active_fraction`` (percent), ``accuracy_matrix`` and the
    stored ``average_accuracy``, ``forgetting`` and ``backward_transfer`` (0-1, after the last task),
    and ``validation_accuracy`` (percent, None without a validation set). Nothing is re-read or recomputed."""
    rows = []
    for job in jobs.to_dict("records"):
        for i, seed in enumerate(job["seeds"]):
            rows.append({**{k: v for k, v in job.items() if k not in PER_SEED}, "seed": seed,
                         **{k: job[k][i] for k in PER_SEED if k != "seeds"}})
    columns = [c for c in jobs.columns if c not in PER_SEED] + ["seed", *PER_SEED[1:]]
    return pd.DataFrame(rows, columns=columns)


def summarize(jobs: pd.DataFrame, pool: str | Sequence[str] = "all") -> pd.DataFrame:
    """One row per grid point (benchmark, activation, optimizer, hyperparameters): its jobs' seeds pooled,
    a seed run twice kept once (the newest), mean ± population std in percent; see `tables.summarize`.

    ``pool`` chooses which sources (a result's ``tag=``, else its ``+sweep=``/``+search=`` preset; the
    ``source`` column of `load`) share grid points: ``"all"`` (default), ``"none"``, or a list of
    sources pooled together; each row's ``sources`` says what it pooled.

    Raises:
        ValueError: ``pool`` names a source no job has, or is not "all", "none" or a list.
    """
    return tables.summarize(jobs, pool=pool)


def paper_setting(points: pd.DataFrame, select: str = "test") -> pd.DataFrame:
    """The grid points of the paper's setting, the ones Tables 1 and 2 compare: the paper's MLP, one epoch
    per task, no strategy, the standard optimizers, and per benchmark the runs a table picks from under
    ``select`` (grids on all examples before held-out runs before searches: `tables.grid_runs`)."""
    tables.check_select(select)
    return tables.plain_runs(points, select)


def best(points: pd.DataFrame, per: Sequence[str] = CELL, select: str = "test") -> pd.DataFrame:
    """The best grid point of each group of ``per``, picked by ``select``.

    ``per`` = (benchmark, activation, optimizer), the default: each cell's winner as Table 2 picks
    it (`tables.best_per_cell`: finished grid points first, then the highest mean, then the smaller
    std). A coarser ``per`` (e.g. ``("benchmark", "activation")``, Table 1; ``("benchmark",
    "optimizer")``, the optimizer table) takes, among those cells' winners, the highest mean (ties:
    the smaller std), as those tables do.

    ``select="test"`` (the default) is the paper's rule: the highest test accuracy. ``"validation"``
    is honest model selection: the highest accuracy on the held-out validation examples (jobs run
    with ``benchmark.validation_fraction`` > 0), and the winner's ``mean``/``std`` are still its
    test accuracy (``val_mean``/``val_std`` its validation accuracy). Grid points without a
    validation accuracy cannot be picked by it; a cell with finished grid points but none with one
    is refused (ValueError listing the cells), never shown without a winner.

    Raises:
        ValueError: ``per`` names a column the frame lacks or leaves out ``benchmark``; ``select`` is
            not ``"test"`` or ``"validation"``; cells that cannot be picked by validation.
    """
    tables.check_select(select)
    per = list(per)
    unknown = [c for c in per if c not in points.columns]
    if unknown or "benchmark" not in per:
        raise ValueError(
            f"best(per={per}): {'unknown column(s) ' + ', '.join(unknown) if unknown else 'per must include benchmark'}; "
            f"allowed: a subset of {list(CELL)} with benchmark, or other columns of the frame"
        )
    cells = tables.best_per_cell(points, select=select)
    return cells if set(per) == set(CELL) else tables.best_over(cells, per, select=select)
