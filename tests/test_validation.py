"""Honest model selection: the held-out validation examples (`cl_sweep.data.tasks.hold_out`), their
accuracy in the result file, and picking grid points by it (`cl_sweep.analysis.best(select=...)`)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from cl_sweep.data.tasks import TaskSplit, TaskSplitError, class_incremental_split, hold_out, limit_test, permuted_split
from conftest import TEST_LIMIT, TEST_SLICE

SLICE = ["benchmark.limit_per_task=64", TEST_SLICE, "n_seeds=2", "progress=false"]


@pytest.fixture(scope="module")
def mnist():
    from cl_sweep.data.datasets import load_dataset

    return load_dataset("mnist", progress=False)


def _split(compose, mnist, *overrides) -> TaskSplit:
    from cl_sweep.training.train import split_of

    return split_of(OmegaConf.to_container(compose(list(overrides)), resolve=True), mnist)


@pytest.mark.slow
def test_held_out_examples_are_a_fixed_disjoint_fraction_of_each_task(compose, mnist):
    from cl_sweep.training.engine import task_orders

    plain = _split(compose, mnist)
    split = _split(compose, mnist, "benchmark.validation_fraction=0.1")
    assert not plain.has_validation and split.has_validation
    for t in range(split.num_tasks):
        train, held, everything = split.train_indices[t], split.validation_indices[t], plain.train_indices[t]
        assert len(held) == round(0.1 * len(everything)) and len(train) + len(held) == len(everything)
        assert not np.intersect1d(train, held).size  # disjoint from training ...
        assert np.array_equal(np.union1d(train, held), everything)  # ... and together the task's examples
        assert set(mnist.train_labels[held]) == set(split.task_classes[t])
        # indices into the train set: the test set (evaluated through split.test_task) is never touched
        assert held.max() < len(mnist.train_labels)
    assert np.array_equal(split.test_task, plain.test_task)
    # no seed's training order ever holds a validation example (limit_per_task or not)
    held = np.concatenate(split.validation_indices)
    for limit in (None, 64):
        orders, _, _ = task_orders(split, [0, 1, 7], 64, 2, limit)
        assert not np.isin(np.concatenate(list(orders.values())), held).any()
    # the same subset for every benchmark that trains on the same examples: an example's draw does not
    # depend on the other keys (two tasks hold out what the first two of five do)
    two = _split(compose, mnist, "benchmark.validation_fraction=0.1", "benchmark.num_tasks=2")
    assert all(np.array_equal(a, b) for a, b in zip(two.validation_indices, split.validation_indices[:2]))


@pytest.mark.slow
def test_held_out_examples_are_the_same_in_another_process(compose, mnist):
    split = _split(compose, mnist, "benchmark.validation_fraction=0.1")
    code = (
        "import hashlib, numpy as np; from cl_sweep.data.datasets import load_dataset; "
        "from cl_sweep.data.tasks import class_incremental_split, hold_out; d = load_dataset('mnist', progress=False); "
        "s = hold_out(class_incremental_split(d.train_labels, d.test_labels, 5, 2), 0.1); "
        "print(hashlib.sha256(np.concatenate(s.validation_indices).tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == hashlib.sha256(np.concatenate(split.validation_indices).tobytes()).hexdigest()


def test_permuted_tasks_hold_out_the_same_images():
    labels = np.arange(200) % 10
    split = hold_out(permuted_split(labels, labels[:50], 3, num_pixels=4), 0.25)
    assert all(len(v) == 50 for v in split.validation_indices)
    assert all(np.array_equal(v, split.validation_indices[0]) for v in split.validation_indices)
    assert all(not np.isin(t, split.validation_indices[0]).any() for t in split.train_indices)


def test_zero_changes_nothing_and_bad_fractions_are_refused():
    labels = np.repeat(np.arange(4), [5, 5, 1, 1])  # tasks {0,1} of 10 examples and {2,3} of 2
    split = class_incremental_split(labels, labels, 2, 2)
    assert hold_out(split, 0) is split and hold_out(split, 0.0) is split
    assert [len(v) for v in hold_out(split, 0.1).validation_indices] == [1, 1]  # at least one example each
    for bad in (-0.1, 1.0, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(TaskSplitError, match=r"validation_fraction=.* must lie in \[0, 1\)"):
            hold_out(split, bad)
    with pytest.raises(TaskSplitError, match=r"holds out 2 of task 2's 2 training examples and leaves it none .*Nothing was trained"):
        hold_out(split, 0.8)


@pytest.mark.slow
def test_zero_is_bit_identical_to_the_split_without_hold_out(compose, mnist):
    """validation_fraction=0 (the default) trains on exactly the data and order of the plain split:
    a job's numbers equal the engine's on `class_incremental_split` itself, its hyperparameters
    keep the keys they always had, and it writes no validation key."""
    from cl_sweep.training.engine import train_population
    from cl_sweep.training.train import _population_setup, members_of, train_jobs

    cfg = OmegaConf.to_container(compose([*SLICE, "benchmark.validation_fraction=0"]), resolve=True)
    [result] = train_jobs([cfg], [[]])
    assert "benchmark.validation_fraction" not in result["hyperparameters"]
    assert "validation_accuracy" not in result and "validation_accuracy_matrix" not in result
    data, _, structure = _population_setup(cfg, False)  # its test set: the slice's 100 per task (SLICE)
    split, _ = limit_test(class_incremental_split(mnist.train_labels, mnist.test_labels, 5, 2), TEST_LIMIT)
    direct = train_population(structure, members_of(cfg, [0, 1]), data, split, limit_per_task=64, progress=False)
    assert direct.validation_matrix is None
    assert np.array_equal(np.asarray(result["final_accuracy"]), direct.final_accuracy)
    assert np.array_equal(np.asarray(result["accuracy_matrix"], float), direct.accuracy_matrix)


@pytest.mark.slow
@pytest.mark.parametrize("model, fraction", [("mlp", 0.1), ("flymodel", 0.02)])  # FlyModel's evaluation is the slow part
def test_a_job_with_a_validation_set_stores_its_accuracy(compose, model, fraction):
    """Both trainers behind the shared host loop (the engine's programs and FlyModel's rule) evaluate
    the held-out examples after each task; the numbers are deterministic."""
    from cl_sweep.results import metrics, validate_result
    from cl_sweep.training.train import train_jobs

    cfg = OmegaConf.to_container(compose([*SLICE, f"model={model}", f"benchmark.validation_fraction={fraction}"]), resolve=True)
    [result] = train_jobs([cfg], [[]])
    validate_result(result)
    assert result["hyperparameters"]["benchmark.validation_fraction"] == fraction
    val, matrix = result["validation_accuracy"], np.asarray(result["validation_accuracy_matrix"], float)
    assert len(val) == 2 and all(0.1 < v <= 1 for v in val)  # well above chance on 5 two-class tasks
    assert matrix.shape == (2, 5, 5) and np.isfinite(matrix).all()
    # after the last task: the mean over every task's held-out examples (the tasks are about equally large)
    assert np.allclose(val, matrix[:, -1].mean(axis=1), atol=0.02)
    assert metrics(result)["validation_accuracy_mean"] == pytest.approx(np.mean(val))
    if model == "mlp":  # same config and seeds, same numbers
        [again] = train_jobs([cfg], [[]])
        assert again["validation_accuracy"] == val and again["final_accuracy"] == result["final_accuracy"]


@pytest.mark.slow
def test_the_early_stop_rule_reads_validation_accuracy_when_examples_are_held_out(compose):
    """Selecting by validation must not peek at the test set: the 2-seed rule that decides which grid points
    get all their seeds compares the held-out examples' accuracy with its threshold, not the test accuracy."""
    from cl_sweep.training.train import train_jobs

    overrides = [*SLICE, "benchmark.validation_fraction=0.2"]
    [first] = train_jobs([OmegaConf.to_container(compose(overrides), resolve=True)], [[]])
    val, test = float(np.mean(first["validation_accuracy"])), float(np.mean(first["final_accuracy"]))
    assert abs(val - test) > 1e-3, (val, test)  # the two sets must disagree for the check to mean anything
    threshold = (val + test) / 2  # between them: validation and test accuracy give opposite decisions
    cfg = compose([*overrides, "n_seeds=3", "early_stop.enabled=true", f"early_stop.threshold={threshold}"])
    [result] = train_jobs([OmegaConf.to_container(cfg, resolve=True)], [[]])
    assert result["final_accuracy"][:2] == first["final_accuracy"]  # the same two first seeds
    assert result["early_stopped"] is (val < threshold)
    assert result["seeds"] == ([0, 1] if val < threshold else [0, 1, 2])


@pytest.mark.slow
def test_permuted_job_evaluates_the_held_out_images_under_each_permutation(compose):
    from cl_sweep.training.train import train_jobs

    cfg = OmegaConf.to_container(compose([
        *SLICE, "benchmark=permuted_mnist", "benchmark.num_tasks=3", "benchmark.validation_fraction=0.05",
    ]), resolve=True)
    [result] = train_jobs([cfg], [[]])
    matrix = np.asarray(result["validation_accuracy_matrix"], float)
    tested = np.asarray(result["accuracy_matrix"], float)
    assert np.array_equal(np.isnan(matrix), np.isnan(tested))  # evaluated where the test set is: task 1 and the newest
    assert np.allclose(result["validation_accuracy"], np.nanmean(matrix[:, -1], axis=1))


@pytest.mark.slow
@pytest.mark.parametrize("value, why", [
    ("-0.1", r"it must lie in \[0, 1\)"),
    ("1.0", r"it must lie in \[0, 1\)"),
    ("0.99999", r"leaves it none to train on"),  # 12,665 examples in task 1: all of them held out
])
def test_the_entry_point_refuses_a_bad_fraction_in_one_paragraph(tmp_path, value, why):
    from conftest import run_cli

    proc = run_cli(f"benchmark.validation_fraction={value}", *SLICE, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    [paragraph] = [line for line in proc.stderr.splitlines() if line.startswith("cl_sweep: ")]
    assert f"benchmark.validation_fraction={value}" in paragraph and re.search(why, paragraph)
    assert not (tmp_path / "result.json").exists()


@pytest.mark.slow
def test_a_multirun_writes_validation_accuracies_and_tables_select_by_them(tmp_path):
    from conftest import REPO, run_cli

    from cl_sweep.results import find_result_files, read_result

    proc = run_cli("--multirun", "activation=relu,hard_ash", "benchmark.validation_fraction=0.1", *SLICE,
                   f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [read_result(f) for f in find_result_files(tmp_path / "sweep")]
    assert len(results) == 2
    for r in results:
        assert len(r["validation_accuracy"]) == 2 and all(0 <= v <= 1 for v in r["validation_accuracy"])
    tables = subprocess.run(
        [sys.executable, "-m", "cl_sweep.analysis.tables", str(tmp_path / "sweep"), "--select", "validation",
         "--out", str(tmp_path / "tables"), "--no-plots"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert tables.returncode == 0, tables.stderr[-3000:]
    text = (tmp_path / "tables" / "split_mnist" / "table2.md").read_text()
    assert "by validation accuracy; test accuracy reported" in text
    points = pd.read_csv(tmp_path / "tables" / "split_mnist" / "grid_points.csv")
    assert points["val_mean"].notna().all()


def _points(rows) -> pd.DataFrame:
    """A `summarize`-like frame: (cell's activation, hp_key, test mean, validation mean) per grid point."""
    return pd.DataFrame([
        {"benchmark": "split_mnist", "activation": act, "optimizer": "adam", "hp_key": key, "hyperparameters": {},
         "status": "ok", "complete": True, "early_stopped": False, "n_seeds": 3, "mean": mean, "std": 1.0,
         "val_mean": val, "val_std": 0.5}
        for act, key, mean, val in rows
    ])


def test_best_by_validation_picks_the_validation_winner_and_reports_its_test_accuracy():
    from cl_sweep import analysis

    points = _points([
        ("relu", "lr=0.1", 80.0, 70.0),  # best on test
        ("relu", "lr=0.01", 75.0, 78.0),  # best on validation
        ("relu", "lr=1", 60.0, float("nan")),  # no validation set: never picked by it
        ("hard_ash", "lr=0.1", 90.0, 65.0),
    ])
    by_test = analysis.best(points).set_index("activation")
    assert by_test.loc["relu", "hp_key"] == "lr=0.1" and by_test.loc["relu", "mean"] == 80.0
    by_val = analysis.best(points, select="validation").set_index("activation")
    assert by_val.loc["relu", "hp_key"] == "lr=0.01"
    assert by_val.loc["relu", "mean"] == 75.0 and by_val.loc["relu", "val_mean"] == 78.0  # test reported, validation beside
    # a coarser group: the cell with the higher validation mean wins (relu's 78 > hard_ash's 65), its test 75 reported
    [row] = analysis.best(points, per=("benchmark",), select="validation").to_dict("records")
    assert (row["activation"], row["mean"]) == ("relu", 75.0)
    [row] = analysis.best(points, per=("benchmark",)).to_dict("records")
    assert (row["activation"], row["mean"]) == ("hard_ash", 90.0)


def test_cells_without_validation_accuracy_are_refused_and_bad_select_too():
    from cl_sweep import analysis

    points = _points([("relu", "lr=0.1", 80.0, 70.0), ("hard_ash", "lr=0.1", 90.0, float("nan"))])
    with pytest.raises(ValueError, match=r"1 cell\(s\) .* none with a validation accuracy.*split_mnist / hard_ash / adam"):
        analysis.best(points, select="validation")
    for bad in ("val", "Test", None, 1):
        with pytest.raises(ValueError, match=rf"select={bad!r} is not allowed; allowed: 'test' .* or 'validation'"):
            analysis.best(points, select=bad)


def test_the_refusal_lists_a_few_cells_and_names_the_folder_of_the_held_out_runs(tmp_path):
    """`make tables SELECT=validation` over a folder of many grids and one held-out sweep: the paragraph
    names five cells and how many more, and the sweep folder whose tables it can make instead."""
    from cl_sweep import analysis

    names = ["relu", "hard_ash", "ash", "lwta", "swish", "sigmoid", "topk_mask", "topk_subtract"]
    points = _points([("relu", "lr=0.1", 80.0, 70.0)] + [(a, "lr=0.1", 60.0, float("nan")) for a in names[1:]])
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "multirun.yaml").write_text("{}\n")
    points["paths"] = [[tmp_path / "held" / "split_mnist" / "relu-adam" / "0" / "result.json"]] + [
        [tmp_path / "grid" / "split_mnist" / f"{a}-adam" / "0" / "result.json"] for a in names[1:]]
    with pytest.raises(ValueError) as refused:
        analysis.best(points, select="validation")
    text = str(refused.value)
    assert "7 cell(s)" in text and "; and 2 more." in text and "split_mnist / topk_subtract / adam" not in text
    assert f"under {tmp_path / 'held'}: " in text and f"tables {tmp_path / 'held'} --select validation" in text


@pytest.mark.slow
@pytest.mark.parametrize("objectives", [None, "final_accuracy_mean"])
def test_an_optuna_search_optimises_and_prunes_on_validation_accuracy(tmp_path, objectives):
    """With held-out examples a study never sees test accuracy unless asked: the trial's value is the
    job's validation mean and its pruner's intermediate values are the running validation accuracy
    after each task. Naming ``hydra.sweeper.objectives=[final_accuracy_mean]`` optimises test accuracy."""
    import optuna

    from conftest import run_cli

    from cl_sweep.results import find_result_files, metrics, read_result

    storage = f"sqlite:///{tmp_path}/s.db"
    named = [] if objectives is None else [f"hydra.sweeper.objectives=[{objectives}]", "hydra.sweeper.direction=maximize"]
    proc = run_cli("--multirun", "hydra/sweeper=optuna", "hydra/sweeper/pruner=median", "activation=hard_ash",
                   "optimizer.learning_rate=interval(0.001,0.1)", "benchmark.validation_fraction=0.1", *named,
                   "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={storage}",
                   *SLICE, "n_seeds=1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = find_result_files(tmp_path / "sweep")
    result = read_result(path)
    [name] = optuna.get_all_study_names(storage)
    [trial] = optuna.load_study(study_name=name, storage=storage).get_trials()
    held, test = metrics(result)["validation_accuracy_mean"], result["final_accuracy_mean"]
    assert held == pytest.approx(result["validation_accuracy"][0]) and abs(held - test) > 1e-6  # they must differ to tell
    assert trial.value == pytest.approx(test if objectives else held)
    # After task t: the accuracy on every task's held-out examples (as the test accuracy covers every task's test
    # images); the tasks hold out about equally many, so about the mean of the matrix row; the last is the job's.
    reported = [trial.intermediate_values[t] for t in sorted(trial.intermediate_values)]
    assert sorted(trial.intermediate_values) == list(range(5))  # one report per task boundary
    assert reported == pytest.approx(np.asarray(result["validation_accuracy_matrix"], float)[0].mean(axis=1), abs=0.02)
    assert reported[-1] == pytest.approx(held) and reported[-1] != pytest.approx(test)


def test_the_validation_keys_are_optional_and_checked_when_present():
    from cl_sweep.results import ResultError, validate_result

    result = {
        "schema": 2, "status": "ok", "benchmark": "split_mnist", "activation": "relu", "optimizer": "adam",
        "hyperparameters": {}, "config": {}, "overrides": [], "seeds": [0, 1], "n_seeds_requested": 2,
        "early_stopped": False, "diverged": [False, False], "final_accuracy": [0.5, 0.6], "final_accuracy_mean": 0.55,
        "final_accuracy_std": 0.05, "accuracy_matrix": [[[0.5]], [[0.6]]], "average_accuracy": [[0.5], [0.6]],
        "forgetting": [None, None], "backward_transfer": [None, None], "active_fraction": [[0.1], [0.1]],
        "wall_time_s": 1.0, "versions": {}, "created": "2024-01-01T00:00:00+00:00",
    }
    validate_result(result)  # without them: a result of a job without a validation set, as before
    validate_result({**result, "validation_accuracy": [0.4, 0.7], "validation_accuracy_matrix": [[[0.4]], [[0.7]]]})
    with pytest.raises(ResultError, match="'validation_accuracy' has 1 entries for 2 seeds"):
        validate_result({**result, "validation_accuracy": [0.4]})
    with pytest.raises(ResultError, match=r"validation accuracy 1.5 is not a fraction in \[0, 1\]"):
        validate_result({**result, "validation_accuracy": [0.4, 1.5]})
    with pytest.raises(ResultError, match="'validation_accuracy' has type dict"):
        validate_result({**result, "validation_accuracy": {}})
