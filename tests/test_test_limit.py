"""``benchmark.test_limit_per_task``: score a smoke run on the first N test examples of each task
(`cl_sweep.data.tasks.limit_test`), as the slow tests do, since evaluating the whole test set after
every task is most of a tiny job's time."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from cl_sweep.data.tasks import class_incremental_split, limit_test, permuted_split
from conftest import run_cli


def _labels() -> np.ndarray:
    # 0..9 repeated, then a run of nines: tasks of unequal size, and one task shorter than the limit below
    return np.concatenate([np.tile(np.arange(10), 30), np.full(5, 9)]).astype(np.int32)


def test_each_task_keeps_its_first_n_test_examples_in_order():
    labels = _labels()
    split = class_incremental_split(labels, labels, 5, 2)
    cut, keep = limit_test(split, 7)
    assert keep is not None and np.all(np.diff(keep) > 0)  # ascending indices into the test set
    for t, classes in enumerate(split.task_classes):
        theirs = np.flatnonzero(np.isin(labels, classes))
        assert np.array_equal(keep[cut.test_task == t], theirs[:7])  # the task's first 7, in the file's order
    assert np.array_equal(cut.test_task, split.test_task[keep]) and len(keep) == 35
    # everything else about the split is left as it was
    assert cut.task_classes == split.task_classes and all(
        np.array_equal(a, b) for a, b in zip(cut.train_indices, split.train_indices))


def test_examples_in_no_task_are_one_more_group_of_n():
    labels = _labels()
    split = class_incremental_split(labels, labels, 2, 2)  # classes 4-9 are in no task (-1)
    cut, keep = limit_test(split, 7)
    assert np.array_equal(keep[cut.test_task == -1], np.flatnonzero(split.test_task == -1)[:7])
    assert [int(np.sum(cut.test_task == t)) for t in (-1, 0, 1)] == [7, 7, 7]


def test_no_limit_or_a_limit_above_every_task_changes_nothing():
    labels = _labels()
    split = class_incremental_split(labels, labels, 5, 2)
    for n in (None, 10_000):
        same, keep = limit_test(split, n)
        assert same is split and keep is None


def test_permuted_tasks_share_the_first_n_test_examples():
    labels = _labels()
    split = permuted_split(labels, labels, 3, seed=0)
    cut, keep = limit_test(split, 40)
    assert np.array_equal(keep, np.arange(40)) and np.array_equal(cut.permutations, split.permutations)


def test_the_limit_is_a_grid_point_key_only_when_set(compose):
    from cl_sweep.training.train import hyperparameters_of

    plain = hyperparameters_of(OmegaConf.to_container(compose([]), resolve=True))
    cut = hyperparameters_of(OmegaConf.to_container(compose(["benchmark.test_limit_per_task=100"]), resolve=True))
    assert "benchmark.test_limit_per_task" not in plain  # stored results keep the keys they always had
    assert cut == {**plain, "benchmark.test_limit_per_task": 100}  # and a cut run never pools with a full one


@pytest.mark.slow
def test_a_job_on_the_slice_is_scored_on_n_examples_per_task(tmp_path):
    """Split-MNIST scored on 100 test examples per task: every per-task accuracy is a whole percent,
    and a second run gives the same numbers."""
    args = ("benchmark.limit_per_task=64", "benchmark.test_limit_per_task=100", "n_seeds=1", "progress=false")
    runs = []
    for name in ("a", "b"):
        proc = run_cli(*args, f"hydra.run.dir={name}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs.append(json.loads((tmp_path / name / "result.json").read_text()))
    matrix = np.asarray(runs[0]["accuracy_matrix"][0], dtype=float)  # [after task, task], fractions
    seen = matrix[np.tril_indices(len(matrix))]
    assert np.allclose(seen * 100, np.round(seen * 100), atol=1e-4), matrix
    assert runs[0]["hyperparameters"]["benchmark.test_limit_per_task"] == 100
    assert runs[0]["accuracy_matrix"] == runs[1]["accuracy_matrix"]


def test_a_bad_limit_is_refused_in_one_paragraph(tmp_path):
    proc = run_cli("benchmark.test_limit_per_task=0", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    said = (proc.stderr + proc.stdout).strip()
    assert "benchmark.test_limit_per_task=0" in said and "null (every test example) or a positive integer" in said
    assert not list(tmp_path.rglob("result.json"))
