"""Continual-learning metrics against hand-computed accuracy matrices."""

from __future__ import annotations

import math

import pytest

from cl_sweep.analysis import metrics

# R[i][j]: accuracy on task j after training task i (3 tasks)
R = [
    [0.9, 0.0, 0.0],
    [0.6, 0.8, 0.0],
    [0.3, 0.7, 0.95],
]


def test_average_accuracy_is_the_mean_over_seen_tasks():
    assert metrics.average_accuracy(R) == pytest.approx([0.9, 0.7, (0.3 + 0.7 + 0.95) / 3])


def test_forgetting_is_the_mean_drop_from_the_best_earlier_accuracy():
    # task 0: best 0.9 -> final 0.3 (0.6); task 1: best 0.8 -> final 0.7 (0.1)
    assert metrics.forgetting(R) == pytest.approx((0.6 + 0.1) / 2)


def test_backward_transfer_compares_final_with_just_trained():
    assert metrics.backward_transfer(R) == pytest.approx(((0.3 - 0.9) + (0.7 - 0.8)) / 2)


def test_no_forgetting_and_zero_bwt_when_nothing_changes():
    flat = [[0.5, 0.0], [0.5, 0.5]]
    assert metrics.forgetting(flat) == 0.0 and metrics.backward_transfer(flat) == 0.0


def test_improving_an_old_task_gives_negative_forgetting_and_positive_bwt():
    better = [[0.5, 0.0], [0.8, 0.9]]  # learning task 2 improved task 1
    assert metrics.forgetting(better) == pytest.approx(-0.3)
    assert metrics.backward_transfer(better) == pytest.approx(0.3)


def test_single_task_has_no_forgetting_or_transfer():
    assert metrics.forgetting([[0.9]]) is None and metrics.backward_transfer([[0.9]]) is None
    assert metrics.average_accuracy([[0.9]]) == [0.9]


def test_unevaluated_entries_make_dependent_metrics_none():
    partial = [[0.9, None, None], [0.6, 0.8, None], [0.3, None, 0.95]]  # first and newest task only
    assert metrics.forgetting(partial) is None and metrics.backward_transfer(partial) is None
    assert metrics.average_accuracy(partial)[:2] == pytest.approx([0.9, 0.7]) and metrics.average_accuracy(partial)[2] is None
    assert metrics.plasticity(partial) == pytest.approx([0.9, 0.8, 0.95])
    assert metrics.stability(partial) == pytest.approx([0.9, 0.6, 0.3])
    assert all(isinstance(v, float) or v is None for v in metrics.plasticity(partial))
    assert not any(isinstance(v, float) and math.isnan(v) for v in metrics.average_accuracy(partial) if v is not None)
