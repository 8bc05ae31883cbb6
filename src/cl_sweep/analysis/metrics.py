"""Continual-learning metrics from an accuracy matrix R (R[i, j]: accuracy on task j after training task i).

Pure NumPy on plain lists, so the aggregator and notebooks use them without JAX. Entries that were
not evaluated (a permuted-MNIST run that only tracks the first and the newest task) are None/NaN;
a metric that needs them is then None.

References: Lopez-Paz & Ranzato 2017, "Gradient episodic memory for continual learning" (average
accuracy, backward and forward transfer); Chaudhry et al. 2018, "Riemannian walk for incremental learning"
(forgetting).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Matrix = Sequence[Sequence[float | None]]


def _array(matrix: Matrix) -> np.ndarray:
    return np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=np.float64)


def _clean(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def average_accuracy(matrix: Matrix) -> list[float | None]:
    """After each task i: the mean accuracy over the tasks seen so far, ``mean_j<=i R[i, j]``."""
    r = _array(matrix)
    return [_clean(float(np.mean(r[i, : i + 1]))) for i in range(len(r))]


def forgetting(matrix: Matrix) -> float | None:
    """Mean over tasks j < T-1 of ``max_{l < T-1} R[l, j] - R[T-1, j]`` (how far each fell from its best).

    None for a single task (nothing to forget) or when an entry it needs was not evaluated.
    """
    r = _array(matrix)
    t = len(r)
    if t < 2:
        return None
    drops = [np.max(r[j : t - 1, j]) - r[t - 1, j] for j in range(t - 1)]
    return _clean(float(np.mean(drops)))


def backward_transfer(matrix: Matrix) -> float | None:
    """``mean_{j < T-1} (R[T-1, j] - R[j, j])``: negative when learning later tasks hurt earlier ones."""
    r = _array(matrix)
    t = len(r)
    if t < 2:
        return None
    return _clean(float(np.mean([r[t - 1, j] - r[j, j] for j in range(t - 1)])))


def forward_transfer(matrix: Matrix, initial: Sequence[float | None] | None) -> float | None:
    """``mean_{i >= 1} (R[i-1, i] - b[i])`` (0-based; GEM's FWT): how much training the earlier
    tasks helps a task before it is trained, against ``b``, the untrained model's per-task
    accuracy (the random-initialisation row). None for one task, without ``initial`` (files before
    schema 3), or when an entry it needs was not evaluated."""
    r = _array(matrix)
    t = len(r)
    if t < 2 or initial is None:
        return None
    b = _array([initial])[0]
    return _clean(float(np.mean([r[i - 1, i] - b[i] for i in range(1, t)])))


def learning_accuracy(matrix: Matrix) -> float | None:
    """``mean_i R[i, i]``: the mean accuracy on each task right after training it (how well new tasks
    are learned, whatever happens to them later). None when a diagonal entry is missing."""
    r = _array(matrix)
    return _clean(float(np.mean(np.diagonal(r)))) if len(r) else None


def plasticity(matrix: Matrix) -> list[float | None]:
    """Accuracy on each task right after training it, ``R[i, i]`` (paper A.10, "latest task")."""
    r = _array(matrix)
    return [_clean(r[i, i]) for i in range(len(r))]


def stability(matrix: Matrix) -> list[float | None]:
    """Accuracy on the first task after each task, ``R[i, 0]`` (paper A.10, "first task")."""
    r = _array(matrix)
    return [_clean(r[i, 0]) for i in range(len(r))]
