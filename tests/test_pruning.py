"""Pruning at task boundaries (``hydra/sweeper/pruner=...``): the pruner configs, the engine's stop,
pruned result files, PRUNED trials, model-steps saved, and the tables leaving pruned jobs out.

Real MNIST slices (64 examples per task, one seed); the sweeps run ``python -m cl_sweep``.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from cl_sweep.analysis import tables
from cl_sweep.results import Objective, ResultError, find_result_files, read_result, validate_result
from conftest import TEST_SLICE, run_cli
from hydra_plugins.cl_sweep_optuna_sweeper import config as sweeper_config
from hydra_plugins.cl_sweep_optuna_sweeper._pruning import make_pruner

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A log learning-rate range whose low end learns nothing on 64 examples: those trials are hopeless.
SEARCH = [
    "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
    "optimizer.learning_rate=tag(log,interval(1e-6,0.1))",
    "benchmark.limit_per_task=64", TEST_SLICE, "n_seeds=1", "progress=false", "hydra.sweep.dir=sweep",
]
MEDIAN = ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2"]


# ---------------------------------------------------------------- the pruner configs


@pytest.mark.parametrize(
    ("node", "pruner"),
    [
        (sweeper_config.NopPrunerConfig, optuna.pruners.NopPruner),
        (sweeper_config.MedianPrunerConfig, optuna.pruners.MedianPruner),
        (sweeper_config.SuccessiveHalvingPrunerConfig, optuna.pruners.SuccessiveHalvingPruner),
        (sweeper_config.HyperbandPrunerConfig, optuna.pruners.HyperbandPruner),
        (sweeper_config.WilcoxonPrunerConfig, optuna.pruners.WilcoxonPruner),
    ],
)
def test_every_pruner_option_builds_its_optuna_pruner_with_its_own_keys(node, pruner) -> None:
    import inspect

    cfg = OmegaConf.structured(node)
    assert isinstance(make_pruner(cfg), pruner)
    keys = set(cfg) - {"_target_"}
    assert keys <= set(inspect.signature(pruner).parameters)  # the constructor's own keyword names


@pytest.mark.parametrize(
    ("node", "match"),
    [
        ({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": -1}, r"MedianPruner\) refused n_startup_trials=-1"),
        ({"_target_": "optuna.pruners.MedianPruner", "warmup": 3}, r"refused warmup=3.*unexpected keyword"),
        ({"_target_": "optuna.pruners.NoSuchPruner"}, r"not an Optuna pruner; allowed: none, median, successive_halving"),
        ({"_target_": "optuna.samplers.TPESampler"}, r"not an Optuna pruner"),
    ],
)
def test_bad_pruner_nodes_are_refused_with_the_value_named(node, match) -> None:
    with pytest.raises(ValueError, match=match):
        make_pruner(node)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        (["hydra/sweeper/pruner=bogus"], ["hydra/sweeper/pruner", "median", "successive_halving", "wilcoxon"]),
        (["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=-1"],
         ["cl_sweep: invalid Optuna sweep: hydra.sweeper.pruner (MedianPruner) refused", "n_startup_trials=-1",
          "Nothing was run."]),
        (["hydra/sweeper/pruner=median", "+hydra.sweeper.pruner.patience=2"],
         ["cl_sweep: invalid Optuna sweep: hydra.sweeper.pruner (MedianPruner) refused", "patience=2"]),
    ],
)
def test_bad_pruners_are_refused_before_any_trial(tmp_path: Path, overrides, expect) -> None:
    proc = run_cli("--multirun", "hydra/sweeper=optuna", *SEARCH, *overrides, cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out[-3000:]
    for text in expect:
        assert text in out, (text, out[-3000:])
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "sweep").exists()  # no study, no job


# ---------------------------------------------------------------- result files


def _ok_result() -> dict:
    matrix = [[0.5] * 3 for _ in range(3)]
    return {
        "schema": 2, "status": "ok", "benchmark": "b", "activation": "a", "optimizer": "o", "hyperparameters": {},
        "config": {}, "overrides": [], "seeds": [0], "n_seeds_requested": 1, "early_stopped": False,
        "diverged": [False], "final_accuracy": [0.5], "final_accuracy_mean": 0.5, "final_accuracy_std": 0.0,
        "accuracy_matrix": [matrix], "average_accuracy": [[0.5] * 3], "forgetting": [0.0],
        "backward_transfer": [0.0], "active_fraction": [[0.1] * 3], "wall_time_s": 1.0, "versions": {},
        "created": "2026-01-01T00:00:00+00:00",
    }


def _pruned_result(tasks: int = 1) -> dict:
    r = _ok_result()
    r.update(status="pruned", final_accuracy=[None], final_accuracy_mean=None, final_accuracy_std=None,
             tasks_trained=[tasks])
    r["accuracy_matrix"] = [[[0.5] * 3 if i < tasks else [None] * 3 for i in range(3)]]
    return r


def test_a_pruned_result_needs_its_tasks_trained_and_no_final_accuracy() -> None:
    validate_result(_pruned_result())
    for broken in ({"tasks_trained": None}, {"tasks_trained": [3]}, {"tasks_trained": [0]}, {"final_accuracy": [0.5]}):
        bad = {**_pruned_result(), **broken}
        if broken.get("tasks_trained", 1) is None:
            del bad["tasks_trained"]
        with pytest.raises(ResultError):
            validate_result(bad)
    with pytest.raises(ResultError, match="only for status 'pruned'"):
        validate_result({**_ok_result(), "tasks_trained": [3]})


def test_a_pruned_objective_crosses_processes_as_pruned() -> None:
    value = pickle.loads(pickle.dumps(Objective(float("nan"), {"final_accuracy_mean": None}, pruned=True)))
    assert value.pruned and np.isnan(value)
    assert not pickle.loads(pickle.dumps(Objective(0.5))).pruned


def test_tables_list_pruned_jobs_and_never_average_them(tmp_path: Path) -> None:
    from cl_sweep.results import write_result

    good, pruned_here, pruned_alone = _ok_result(), _pruned_result(), _pruned_result(2)
    pruned_here["created"] = "2026-01-02T00:00:00+00:00"  # newer than the good job of its grid point
    pruned_alone["hyperparameters"] = {"optimizer.learning_rate": 1e-6}
    for i, r in enumerate((good, pruned_here, pruned_alone)):
        write_result(r, tmp_path / str(i))
    jobs, bad = tables.load_results(tmp_path)
    assert not bad
    summary = tables.summarize(jobs).set_index("hp_key")
    point = summary.loc[tables.hyperparameter_key({})]
    assert point["status"] == "ok" and point["mean"] == pytest.approx(50.0) and point["n_pruned_jobs"] == 1
    assert point["n_seeds"] == 1  # the pruned job's seed 0 did not replace the finished one
    alone = summary.loc[tables.hyperparameter_key({"optimizer.learning_rate": 1e-6})]
    assert alone["status"] == "pruned" and np.isnan(alone["mean"]) and alone["complete"]
    best = tables.best_per_cell(tables.summarize(jobs))
    assert best.iloc[0]["mean"] == pytest.approx(50.0) and best.iloc[0]["n_pruned"] == 1
    kinds = [k for k, _ in tables.problems(tables.summarize(jobs))]
    assert kinds.count("pruned") == 2


# ---------------------------------------------------------------- the engine's stop


@pytest.mark.slow
def test_a_pruned_job_stops_at_the_boundary_and_its_later_seeds_never_train(compose) -> None:
    from cl_sweep.training.train import train_jobs

    def cfg(*o):
        return OmegaConf.to_container(compose(["benchmark.limit_per_task=64", "progress=false", *o]), resolve=True)

    cfgs = [cfg("n_seeds=1"), cfg("n_seeds=3", "seed=5")]  # cap 2: job 1's seeds 6-7 are a second call
    heard = []

    def prune_job_1_after_task_2(job, event):
        heard.append((job, event.task))
        return job == 1 and event.task == 1

    alone = train_jobs([cfgs[0]], [[]], max_population=2)[0]
    kept, pruned = train_jobs(cfgs, [[], []], listeners=[prune_job_1_after_task_2], max_population=2)
    T = len(kept["accuracy_matrix"][0])
    assert pruned["status"] == "pruned" and pruned["seeds"] == [5] and pruned["tasks_trained"] == [2]
    assert all(v is None for row in pruned["accuracy_matrix"][0][2:] for v in row)
    assert all(v is not None for v in pruned["accuracy_matrix"][0][1])
    assert pruned["final_accuracy"] == [None] and pruned["final_accuracy_mean"] is None
    assert (1, 2) not in heard and [t for j, t in heard if j == 0] == list(range(T))  # a pruned job is not heard again
    validate_result(pruned)
    # the job left alone in the population trains on to the end, as it does alone
    assert kept["status"] == "ok" and "tasks_trained" not in kept
    np.testing.assert_allclose(np.array(kept["accuracy_matrix"], float), np.array(alone["accuracy_matrix"], float), atol=2e-3)


# ---------------------------------------------------------------- real sweeps


def _sweep(tmp_path: Path, *overrides: str) -> str:
    proc = run_cli("--multirun", "hydra/sweeper=optuna", *SEARCH, *overrides, cwd=tmp_path, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in out, out[-4000:]
    return out


def _model_steps(sweep_dir: Path) -> tuple[int, dict[int, dict]]:
    """The sweep's tasks trained, summed over its result files (one seed each), and the results by trial."""
    results = {int(p.parent.name): read_result(p) for p in find_result_files(sweep_dir)}
    steps = sum(sum(r.get("tasks_trained") or [len(r["accuracy_matrix"][0])] * len(r["seeds"])) for r in results.values())
    return steps, results


def _study(tmp_path: Path) -> optuna.Study:
    storage = f"sqlite:///{tmp_path}/multirun/optuna.sqlite3"
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_median_pruning_in_process_marks_trials_pruned_and_their_results_say_so(tmp_path: Path) -> None:
    out = _sweep(tmp_path, *MEDIAN, "hydra.sweeper.n_trials=5")
    study = _study(tmp_path)
    pruned = [t.number for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and len(study.trials) == 5  # PRUNED trials count towards n_trials
    steps, results = _model_steps(tmp_path / "sweep")
    for number, r in results.items():
        if number in pruned:
            assert r["status"] == "pruned" and r["tasks_trained"][0] < len(r["accuracy_matrix"][0])
            assert study.trials[number].intermediate_values  # it reported before it stopped
        else:
            assert r["status"] == "ok"
        assert r["overrides"] == study.trials[number].user_attrs["overrides"]  # the channel added no override
    assert "PRUNED" in out
    assert re.search(rf"sweep done: 5/5 trials in .*: {5 - len(pruned)} ok, 0 diverged, 0 failed, {len(pruned)} pruned; 0 already complete", out)
    results_file = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results_file.n_pruned == len(pruned) and results_file.n_complete == 5 - len(pruned)
    # resume: the study is finished, PRUNED trials are not replaced
    again = _sweep(tmp_path, *MEDIAN, "hydra.sweeper.n_trials=5")
    assert "Study already complete" in again and len(_study(tmp_path).trials) == 5


@pytest.mark.slow
def test_pruning_in_populations_saves_model_steps_at_an_equal_best_value(tmp_path: Path) -> None:
    common = ["hydra/launcher=population", "hydra.sweeper.n_jobs=4", "hydra.sweeper.n_trials=8"]
    for name, pruner in (("none", []), ("median", MEDIAN)):
        (tmp_path / name).mkdir()
        _sweep(tmp_path / name, *common, *pruner)
    plain, pruned = _study(tmp_path / "none"), _study(tmp_path / "median")
    assert [t.params for t in plain.trials] == [t.params for t in pruned.trials]  # the same search
    assert any(t.state == TrialState.PRUNED for t in pruned.trials)
    steps_plain, _ = _model_steps(tmp_path / "none" / "sweep")
    steps_pruned, results = _model_steps(tmp_path / "median" / "sweep")
    assert steps_pruned < steps_plain == 8 * len(results[0]["accuracy_matrix"][0])
    assert pruned.best_value == pytest.approx(plain.best_value, abs=2e-3)
    assert pruned.best_trial.number == plain.best_trial.number


@pytest.mark.slow
def test_a_stored_search_trial_re_runs_alone_from_its_overrides(tmp_path: Path) -> None:
    """A trial of a pruning search (results/search/) is re-run as a single job from the overrides its
    result records: it belongs to no study then, so nothing reports or prunes, and it trains to the end."""
    stored = read_result(next(iter(find_result_files(Path(__file__).resolve().parents[1] / "results" / "search"))))
    assert "+search=a6_wide" in stored["overrides"]
    proc = run_cli(*stored["overrides"], "benchmark.limit_per_task=64", "n_seeds=1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    again = read_result(tmp_path / "result.json")
    assert again["status"] in ("ok", "diverged") and "tasks_trained" not in again
