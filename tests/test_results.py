"""The result schema: validation, atomic writes, reading back, and the resume check."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from cl_sweep.results import (
    RESULT_FILENAME, ResultError, find_result_files, is_complete, read_result, validate_result, write_result,
)
from conftest import TEST_LIMIT


def valid(**changes):
    result = {
        "schema": 1, "status": "ok", "benchmark": "split_mnist", "activation": "hard_ash", "optimizer": "adagrad",
        "hyperparameters": {"optimizer.learning_rate": 2e-4}, "config": {}, "overrides": ["seed=0"],
        "seeds": [0, 1], "n_seeds_requested": 2, "early_stopped": False, "diverged": [False, False],
        "final_accuracy": [0.78, 0.8], "final_accuracy_mean": 0.79, "final_accuracy_std": 0.01,
        "accuracy_matrix": [[[1.0]], [[1.0]]], "wall_time_s": 1.0, "versions": {}, "created": "2026-01-01T00:00:00+00:00",
    }
    result.update(changes)
    return result


def test_valid_result_round_trips(tmp_path):
    path = write_result(valid(), tmp_path / "job")
    assert path == tmp_path / "job" / RESULT_FILENAME
    assert read_result(path) == valid()
    assert list(find_result_files(tmp_path)) == [path]


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({"schema": 4}, "schema 4"),
        ({"schema": 2}, "missing keys"),  # a v2 file must carry the metrics
        ({"schema": 3}, "missing keys"),  # a v3 file, the metrics of version 3 too
        ({"status": "weird"}, "status"),
        ({"seeds": [0]}, "entries for 1 seeds"),
        ({"final_accuracy": [78.0, 80.0]}, "not a fraction"),
        ({"status": "diverged"}, "does not agree"),
        ({"final_accuracy_mean": None}, "final_accuracy_mean"),
        ({"early_stopped": "no"}, "early_stopped"),
    ],
)
def test_invalid_results_are_refused_with_the_reason(changes, reason):
    with pytest.raises(ResultError, match=reason):
        validate_result(valid(**changes))


def test_version_2_carries_per_seed_metrics():
    v2 = valid(schema=2, average_accuracy=[[1.0], [1.0]], forgetting=[None, None], backward_transfer=[None, None],
               active_fraction=[[0.05], [0.04]])
    validate_result(v2)
    with pytest.raises(ResultError, match="entries for 2 seeds"):
        validate_result({**v2, "forgetting": [None]})


def test_a_diverged_result_has_no_mean():
    validate_result(valid(status="diverged", diverged=[True, False], final_accuracy=[None, 0.8],
                          final_accuracy_mean=None, final_accuracy_std=None))


def test_write_refuses_an_invalid_result_and_leaves_the_old_file(tmp_path):
    write_result(valid(), tmp_path)
    before = (tmp_path / RESULT_FILENAME).read_text()
    with pytest.raises(ResultError):
        write_result(valid(seeds=[0]), tmp_path)
    assert (tmp_path / RESULT_FILENAME).read_text() == before
    assert sorted(os.listdir(tmp_path)) == [RESULT_FILENAME]  # no temp file left behind


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_result(valid(), tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("text,reason", [("{", "not valid JSON"), ('{"a": 1}', "no 'schema' key"), ("[1]", "not a result object")])
def test_read_reports_file_and_reason(tmp_path, text, reason):
    path = tmp_path / RESULT_FILENAME
    path.write_text(text)
    with pytest.raises(ResultError, match=reason) as info:
        read_result(path)
    assert str(path) in str(info.value)


def test_a_job_is_identified_by_what_changes_its_numbers(tmp_path):
    """Run-control keys (progress bars, threads, data folder, skip rule, tag) do not make another job."""
    from cl_sweep.results import job_identity

    stored = ["activation=hard_ash", "optimizer.learning_rate=0.001", "progress=false", "skip_completed=false"]
    write_result(valid(overrides=stored), tmp_path)
    assert is_complete(tmp_path, ["optimizer.learning_rate=0.001", "activation=hard_ash"]) is not None
    assert is_complete(tmp_path, ["activation=hard_ash", "optimizer.learning_rate=0.001", "cpu_threads=1",
                                  "+data_dir=/data", "tag=again", "++allow_dirty_results=true"]) is not None
    assert is_complete(tmp_path, ["activation=hard_ash", "optimizer.learning_rate=0.002", "progress=false"]) is None
    assert is_complete(tmp_path, ["activation=hard_ash", "optimizer.learning_rate=0.001", "seed=1"]) is None
    assert job_identity(["progress=true", "n_seeds=2", "+tag=x"]) == ["n_seeds=2"]


def test_is_complete_checks_validity_and_overrides(tmp_path):
    assert is_complete(tmp_path) is None
    write_result(valid(overrides=["seed=0", "activation=hard_ash"]), tmp_path)
    assert is_complete(tmp_path) is not None
    assert is_complete(tmp_path, ["activation=hard_ash", "seed=0"]) is not None  # order does not matter
    assert is_complete(tmp_path, ["seed=1", "activation=hard_ash"]) is None
    (tmp_path / RESULT_FILENAME).write_text(json.dumps(valid())[:50])  # truncated
    assert is_complete(tmp_path) is None


@pytest.mark.slow
def test_every_stored_a6_job_is_recognised_by_a_rerun_of_its_sweep():
    """The A.6 sweep re-run as the README shows it (`progress=false`, no `skip_completed=false`) finds every
    stored job complete, the 33 stored with `skip_completed=false` included: nothing would train again."""
    from pathlib import Path

    from cl_sweep.results import job_identity

    root = Path(__file__).resolve().parents[1] / "results" / "a6"
    files = list(find_result_files(root))
    rerun_of = {p: [*job_identity(read_result(p)["overrides"]), "progress=false"] for p in files}
    assert sum(any(o.startswith("skip_completed=") for o in read_result(p)["overrides"]) for p in files) == 33
    assert [p for p, overrides in rerun_of.items() if is_complete(p.parent, overrides) is None] == []


def _v3(**changes):
    """A valid schema-3 result of two seeds and two tasks."""
    matrix = [[0.9, 0.0], [0.7, 0.8]]
    return valid(**{
        "schema": 3, "accuracy_matrix": [matrix, matrix], "average_accuracy": [[0.9, 0.75]] * 2, "forgetting": [0.2] * 2,
        "backward_transfer": [-0.2] * 2, "active_fraction": [[0.05, 0.05]] * 2, "initial_accuracy": [[0.1, 0.1]] * 2,
        "forward_transfer": [-0.1] * 2, "learning_accuracy": [0.85] * 2, "class_accuracy": [[0.8] * 10] * 2,
        "train_loss": [[0.5, 0.7]] * 2, "peak_memory_mib": 600.0, "time_per_model_s": 3.0, **changes,
    })


def test_version_3_carries_its_metrics_and_checks_the_curves():
    validate_result(_v3())
    curve = {"step": [0, 2, 3], "task": [0, 0, 0], "accuracy": [0.1, 0.5, 0.6], "task_accuracy": [[0.1, 0.1]] * 3}
    validate_result(_v3(curve=[curve, curve]))
    with pytest.raises(ResultError, match="'learning_accuracy' has 1 entries for 2 seeds"):
        validate_result(_v3(learning_accuracy=[0.85]))
    with pytest.raises(ResultError, match="differ in length"):
        validate_result(_v3(curve=[curve, {**curve, "accuracy": [0.1]}]))
    with pytest.raises(ResultError, match="increasing order"):
        validate_result(_v3(curve=[curve, {**curve, "step": [0, 3, 2]}]))
    with pytest.raises(ResultError, match="'curve' has 1 entries"):
        validate_result(_v3(curve=[curve]))


@pytest.mark.slow
def test_a_real_run_with_eval_every_stores_curves_and_the_schema_3_metrics(curve_job):
    """``eval_every=2`` on 3 steps per task: evaluations before training, at every even step and after
    each task; the derived metrics agree with the stored matrix, initial row and class accuracies."""
    from cl_sweep.analysis import metrics
    from cl_sweep.data.datasets import load_dataset

    r = read_result(curve_job / RESULT_FILENAME)
    assert r["schema"] == 3 and r["status"] == "ok" and r["config"]["eval_every"] == 2
    from cl_sweep.data.tasks import class_incremental_split, limit_test

    mnist = load_dataset("mnist", progress=False)
    _, keep = limit_test(class_incremental_split(mnist.train_labels, mnist.test_labels, 5, 2), TEST_LIMIT)  # CURVE_RUN's
    counts = np.bincount(mnist.test_labels[keep], minlength=10)
    for i in range(2):
        matrix, curve = r["accuracy_matrix"][i], r["curve"][i]
        assert curve["step"] == [0, 2, 3, 4, 6, 8, 9, 10, 12, 14, 15]
        assert curve["task"] == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        assert curve["task_accuracy"][0] == r["initial_accuracy"][i]  # the untrained model's row
        ends = [k for k in range(len(curve["step"])) if k + 1 == len(curve["task"]) or curve["task"][k + 1] != curve["task"][k]]
        assert [curve["task_accuracy"][k] for k in ends] == matrix  # a task's last point is its matrix row
        assert curve["accuracy"][-1] == r["final_accuracy"][i]
        initial = r["initial_accuracy"][i]
        fwt = np.mean([matrix[t - 1][t] - initial[t] for t in range(1, 5)])
        assert r["forward_transfer"][i] == pytest.approx(fwt, abs=1e-12) == metrics.forward_transfer(matrix, initial)
        assert r["learning_accuracy"][i] == pytest.approx(np.mean([matrix[t][t] for t in range(5)]), abs=1e-12)
        # the per-class accuracies, weighted by each class's test examples, are the final accuracy
        assert np.dot(r["class_accuracy"][i], counts) / counts.sum() == pytest.approx(r["final_accuracy"][i], abs=1e-6)
        assert all(0 < loss < 10 for loss in r["train_loss"][i])
    assert r["peak_memory_mib"] > 100 and 0 < r["time_per_model_s"] <= r["wall_time_s"]


def test_sweep_metrics_include_the_schema_3_values_and_back_fill_learning_accuracy():
    """What ``hydra.sweeper.objectives`` may name: the new means and resources, None where a file lacks them."""
    from cl_sweep.results import METRICS, metrics

    new = metrics(_v3())
    assert set(new) == set(METRICS)
    assert new["forward_transfer_mean"] == pytest.approx(-0.1) and new["learning_accuracy_mean"] == pytest.approx(0.85)
    assert (new["peak_memory_mib"], new["time_per_model_s"]) == (600.0, 3.0)
    old = metrics(valid(accuracy_matrix=[[[0.9, 0.0], [0.7, 0.8]], [[0.7, 0.0], [0.6, 0.6]]]))
    assert old["learning_accuracy_mean"] == pytest.approx(0.75)  # from the diagonals of a schema-1 file
    assert old["forward_transfer_mean"] is None and old["peak_memory_mib"] is None
