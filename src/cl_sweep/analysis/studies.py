"""Grid results as Optuna studies: one study per (benchmark, activation, optimizer) cell.

    python -m cl_sweep.analysis.tables results/a6 --to-study sqlite:///grid.db
    make dashboard STORAGE=sqlite:///$PWD/grid.db

A grid sweep writes result files, not a study; exporting its grid points into a study gives them
the views Optuna's tools have for a search (optuna-dashboard's parallel coordinates, slice and
importance plots, ``optuna.visualization``), beside the studies of Optuna sweeps. Each grid point
becomes one trial: its activation and optimizer values are the params (a categorical
distribution over the values the cell's grid holds), its pooled mean final accuracy (percent) the
value, and its std, seeds, early stop and result files user attributes; a diverged grid point is a
FAIL trial. A study is a derived view of the files: exporting again replaces a study of the same
name (``grid|<benchmark>|<activation>|<optimizer>``), so it always matches the results it was made from.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

#: Name of the study a cell is exported to.
STUDY_NAME = "grid|{benchmark}|{activation}|{optimizer}"


def _params(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """A grid point's own values: its activation and optimizer keys (lists as text: Optuna's
    categorical choices are scalars)."""
    out = {}
    for key, value in sorted(hyperparameters.items()):
        if key.startswith(("activation.", "optimizer.")):
            out[key] = value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
    return out


def export_to_study(summary: pd.DataFrame, storage: str) -> list[tuple[str, int]]:
    """Writes every (benchmark, activation, optimizer) cell of ``summary`` as a study into ``storage``.

    Args:
        summary: `tables.summarize`' grid points.
        storage: an Optuna storage URL (``sqlite:///...``, ``postgresql://...``).

    Returns:
        ``(study name, trials)`` per study written, in the summary's order.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    written = []
    for (benchmark, activation, optimizer), cell in summary.groupby(["benchmark", "activation", "optimizer"], sort=False):
        points = [(row, _params(row["hyperparameters"] if isinstance(row["hyperparameters"], dict) else {}))
                  for _, row in cell.iterrows()]
        choices: dict[str, list[Any]] = {}
        for _, params in points:
            for key, value in params.items():
                if value not in choices.setdefault(key, []):
                    choices[key].append(value)
        distributions = {key: CategoricalDistribution(values) for key, values in choices.items()}
        name = STUDY_NAME.format(benchmark=benchmark, activation=activation, optimizer=optimizer)
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass  # not exported before
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.set_user_attr("source", "cl_sweep grid results (python -m cl_sweep.analysis.tables --to-study)")
        study.set_user_attr("value", "final_accuracy_mean over the grid point's seeds, percent")
        trials = []
        for row, params in points:
            ok = row["status"] == "ok" and math.isfinite(row["mean"])
            trials.append(create_trial(
                state=TrialState.COMPLETE if ok else TrialState.FAIL,
                value=float(row["mean"]) if ok else None,
                params=params,
                distributions={k: distributions[k] for k in params},
                user_attrs={
                    "std": None if not ok else float(row["std"]),
                    "n_seeds": int(row["n_seeds"]),
                    "early_stopped": bool(row["early_stopped"]),
                    "complete": bool(row["complete"]),
                    "status": str(row["status"]),
                    "hp_key": str(row["hp_key"]),
                    "paths": [str(p) for p in row["paths"]],
                },
            ))
        study.add_trials(trials)
        written.append((name, len(trials)))
    return written
