"""The Optuna commands of the README run as written: ``python -m cl_sweep --multirun hydra/sweeper=optuna ...``.

Each test runs from a temporary working directory, so ``multirun/`` (sweep dirs and the
default SQLite study) lands there; only slice overrides are added to the README's commands.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from cl_sweep.results import read_result
from conftest import TEST_SLICE, run_cli

# A one-trial, one-seed slice of the real job (a few seconds on a CPU).
SLICE = ["hydra.sweeper.n_trials=1", "benchmark.limit_per_task=64", TEST_SLICE, "n_seeds=1", "progress=false"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "optimizer"),
    [("a6", "rmsprop"), ("a6_log", "adagrad")],  # the README's two Optuna rows
)
def test_readme_search_presets_run_without_a_sweep_dir(tmp_path: Path, preset: str, optimizer: str) -> None:
    # The presets' hydra.sweep.dir is `multirun/optuna/${hydra:runtime.choices.benchmark}/...`:
    # no hydra.sweep.dir on the command line, so the `${hydra:...}` resolver must work in the sweeper.
    proc = run_cli(
        "--multirun", "hydra/sweeper=optuna", f"+search={preset}", "activation=hard_ash", f"optimizer={optimizer}",
        *SLICE, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out and "HydraConfig was not set" not in out

    sweep_dir = tmp_path / "multirun" / "optuna" / "split_mnist" / f"hard_ash-{optimizer}"
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert results.n_complete == 1 and results.best_trial == 0
    result = read_result(sweep_dir / "0" / "result.json")
    assert result["activation"] == "hard_ash" and result["optimizer"] == optimizer
    assert result["seeds"] == [0]

    storage = f"sqlite:///{tmp_path}/multirun/optuna.sqlite3"
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert set(study.trials[0].params) == {
        "activation.alpha", "activation.z_k", "optimizer.learning_rate",
        *(["optimizer.decay"] if optimizer == "rmsprop" else []),
    }  # fmt: skip
    assert results.best_value == pytest.approx(study.best_value)


def test_empty_search_space_is_refused_before_any_trial(tmp_path: Path) -> None:
    proc = run_cli("--multirun", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3", cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-4000:]
    assert "Traceback" not in out
    assert "cl_sweep: invalid Optuna sweep: the search space is empty" in proc.stderr
    for hint in (
        "+search=a6", "+search=a6_log", "hydra.sweeper.params.<key>=", "optimizer.learning_rate=interval(1e-5,1e-3)"
    ):  # fmt: skip
        assert hint in proc.stderr, hint
    # refused before the storage was opened: no study, no trial, no job dir
    assert not (tmp_path / "multirun").exists()


def optuna_sweep(tmp_path: Path, *overrides: str) -> str:
    """An Optuna sweep of the real job on a one-seed, 64-example slice into ``<tmp_path>/sweep``; its output."""
    proc = run_cli("--multirun", "hydra/sweeper=optuna", *overrides, "benchmark.limit_per_task=64", "n_seeds=1",
                   "progress=false", "hydra.sweep.dir=sweep", cwd=tmp_path, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.mark.slow
def test_multi_objective_sweep_of_accuracy_against_sparsity(tmp_path: Path) -> None:
    """The issue's command: maximise accuracy, minimise the active fraction, read from each job's
    result by name; the Pareto front in optimization_results.yaml holds those numbers."""
    out = optuna_sweep(
        tmp_path, "hydra/sweeper/sampler=nsgaii", "hydra.sweeper.sampler.seed=0", "hydra.sweeper.direction=[maximize,minimize]",
        "hydra.sweeper.objectives=[final_accuracy_mean,active_fraction_mean]", "activation=hard_ash",
        "activation.alpha=interval(2.0,6.0)", "optimizer=adagrad", "hydra.sweeper.n_trials=3",
    )  # fmt: skip
    assert "direction of final_accuracy_mean, active_fraction_mean: ['maximize', 'minimize'] (from hydra.sweeper.direction)" in out
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert list(results.objectives) == ["final_accuracy_mean", "active_fraction_mean"]
    assert 1 <= len(results.solutions) <= 3
    for point in results.solutions:
        result = read_result(tmp_path / "sweep" / str(point.trial) / "result.json")
        assert list(point["values"]) == pytest.approx(
            [result["final_accuracy_mean"], result["active_fraction"][0][-1]]
        )
        assert point.params["activation.alpha"] == result["hyperparameters"]["activation.alpha"]


@pytest.mark.slow
def test_cl_sweep_maximises_accuracy_when_no_direction_is_given(tmp_path: Path) -> None:
    """The entry point declares its objective: with no hydra.sweeper.direction (upstream's default is
    minimize) a sweep of cl_sweep still maximises final accuracy, and says where that came from."""
    out = optuna_sweep(tmp_path, "optimizer.learning_rate=choice(1e-7,2e-4)", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2")
    assert "direction: maximize (from the task's declared objective (final_accuracy_mean))" in out
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    values = {n: read_result(tmp_path / "sweep" / str(n) / "result.json")["final_accuracy_mean"] for n in (0, 1)}
    assert results.best_value == pytest.approx(max(values.values()))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.objectives=[final_accuracy_mean]"],
         "hydra.sweeper.direction has 2 direction(s) ['maximize', 'minimize'] but hydra.sweeper.objectives has 1 key(s)"),
        (["hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.objectives=[final_accuracy_mean,sparsity]"],
         "hydra.sweeper.objectives names sparsity, which no result of this task has; allowed: final_accuracy_mean,"),
        (["hydra.sweeper.objectives=[final_accuracy_mean,wall_time_s]"],
         "hydra.sweeper.objectives=['final_accuracy_mean', 'wall_time_s'] but hydra.sweeper.direction is not given; "
         "give one direction per objective, e.g. hydra.sweeper.direction=[maximize,maximize]. Nothing was run."),
    ],
)
def test_bad_objectives_are_refused_before_any_trial(tmp_path: Path, overrides: list[str], needle: str) -> None:
    proc = run_cli("--multirun", "hydra/sweeper=optuna", "optimizer.learning_rate=choice(1e-4,2e-4)", *overrides,
                   cwd=tmp_path, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-4000:]
    assert "Traceback" not in out
    assert f"cl_sweep: invalid Optuna sweep: {needle}" in proc.stderr
    assert not (tmp_path / "multirun").exists()  # refused before the storage was opened


@pytest.mark.slow
def test_batched_trials_train_as_one_population(tmp_path: Path) -> None:
    """hydra.sweeper.n_jobs=4 with the population launcher: the 4 trials asked together are one
    structure, trained by one compiled program in calls that fill its populations."""
    out = optuna_sweep(
        tmp_path, "hydra/launcher=population", "+search=a6", "activation=hard_ash", "optimizer=adagrad",
        "hydra.sweeper.n_jobs=4", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=0",
    )  # fmt: skip
    assert out.count("Launching 4 jobs as populations") == 1  # one launcher call for the whole batch
    assert "population 1/1: hard_ash + adagrad, 4 jobs" in out  # one structure: one program
    storage = f"sqlite:///{tmp_path}/multirun/optuna.sqlite3"
    (name,) = optuna.get_all_study_names(storage)
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for t in trials:  # each trial's value is its own job's result
        assert t.value == pytest.approx(read_result(tmp_path / "sweep" / str(t.number) / "result.json")["final_accuracy_mean"])
