"""How `train_jobs` fills its calls across jobs (#19 part 4): every call full while members wait,
a job's phase-1 seeds together where they fit, phase 2 first once it fills a call, each result out
as soon as its job's last model has trained, and the batches the population launcher hands it.

The call plan is checked against a stand-in for the engine (each member's accuracy is a function of
its job and seed, so the early-stop rule's decisions are known); one real-MNIST slice checks that a
filled batch gives every job the numbers it gets alone.
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from cl_sweep.training import train
from cl_sweep.training.engine import TaskEnd
from cl_sweep.training.train import jobs_per_batch, train_jobs
from conftest import TEST_SLICE

SLICE = ["benchmark.limit_per_task=64", TEST_SLICE, "progress=false"]


def _cfg(compose, *overrides):
    return OmegaConf.to_container(compose([*SLICE, *overrides]), resolve=True)


@pytest.fixture
def fake_engine(monkeypatch):
    """Replaces the engine's population call: records each call's members ((job's lr, seed)), and gives
    a member the final accuracy ``accuracy[(lr, seed)]`` (default 0.9) on every task."""
    calls: list[list[tuple[float, int]]] = []
    accuracy: dict[tuple[float, int], float] = {}

    def fake(structure, members, device_data, split, *, pad_to=None, compile_only=False, on_task_end=None, **_):
        key = [(m.optimizer_hp["learning_rate"], m.seed) for m in members]
        calls.append(key)
        time.sleep(0.02)  # a call takes time: the jobs' wall-time shares are measurable
        n, t = len(members), split.num_tasks
        acc = np.array([accuracy.get(k, 0.9) for k in key], np.float32)
        overall = np.repeat(acc[:, None], t, axis=1)
        stopped = None
        if on_task_end is not None:  # the listeners' prune list after task 0 stops those members there
            event = TaskEnd(task=0, num_tasks=t, seeds=tuple(m.seed for m in members),
                            accuracy_matrix=np.zeros((n, t, t)), overall_accuracy=overall, active_fraction=np.zeros((n, t)),
                            diverged=np.zeros(n, bool), steps=1, elapsed_s=0.0)
            stopped = set(on_task_end(event))
        trained = np.array([1 if i in (stopped or ()) else t for i in range(n)])
        return SimpleNamespace(
            final_accuracy=acc, accuracy_matrix=np.repeat(overall[:, None, :], t, axis=1), diverged=np.zeros(n, bool),
            active_fraction=np.full((n, t), 0.1), tasks_trained=trained, validation_accuracy=None, curve=None,
            initial_accuracy=np.full((n, t), 0.1), class_accuracy=None, train_loss=np.full((n, t), 0.5),
        )

    monkeypatch.setattr(train, "train_population", fake)
    return SimpleNamespace(calls=calls, accuracy=accuracy)


def test_calls_are_filled_across_jobs_and_results_come_as_jobs_finish(compose, fake_engine):
    # three 5-seed jobs with the paper's rule (2 seeds, then 3 if their mean reaches 0.65); B fails it
    cfgs = [_cfg(compose, f"optimizer.learning_rate={lr}", "early_stop.enabled=true") for lr in (1e-4, 2e-4, 3e-4)]
    A, B, C = 1e-4, 2e-4, 3e-4
    fake_engine.accuracy.update({(B, 0): 0.5, (B, 1): 0.6})
    order = []
    tic = time.perf_counter()
    results = train_jobs(cfgs, [[]] * 3, max_population=2, on_result=lambda j, r: order.append((j, r)))
    wall = time.perf_counter() - tic
    assert fake_engine.calls == [
        [(A, 0), (A, 1)],  # A's phase 1: its mean passes, its 3 more seeds queue
        [(A, 2), (A, 3)],  # phase 2 first while it fills a call
        [(B, 0), (B, 1)],  # one left: B's phase 1 (together) comes first; B stops early
        [(C, 0), (C, 1)],
        [(A, 4), (C, 2)],  # A's last seed fills a call with C's: no population of 1
        [(C, 3), (C, 4)],
    ]
    assert [j for j, _ in order] == [1, 0, 2]  # each result as soon as its job's last model trained
    assert [r for _, r in sorted(order, key=lambda x: x[0])] == results
    assert [r["seeds"] for r in results] == [[0, 1, 2, 3, 4], [0, 1], [0, 1, 2, 3, 4]]
    assert [r["early_stopped"] for r in results] == [False, True, False]
    # a job's wall time is its members' share of the calls: the three add up to the whole
    assert results[0]["wall_time_s"] > results[1]["wall_time_s"] >= 0.02
    assert sum(r["wall_time_s"] for r in results) == pytest.approx(wall, abs=0.05)
    assert all(math.isclose(r["time_per_model_s"], r["wall_time_s"] / len(r["seeds"]), abs_tol=2e-3) for r in results)


def test_a_phase_1_group_is_split_only_to_fill_a_call(compose, fake_engine):
    # populations of 3 and 2-seed first phases: a call that nothing else fills takes one seed of the next job
    cfgs = [_cfg(compose, f"optimizer.learning_rate={lr}", "early_stop.enabled=true") for lr in (1e-4, 2e-4)]
    train_jobs(cfgs, [[]] * 2, max_population=3)
    assert [len(c) for c in fake_engine.calls] == [3, 3, 3, 1]  # 10 models: full calls, the last one short
    assert fake_engine.calls[0] == [(1e-4, 0), (1e-4, 1), (2e-4, 0)]
    # without early stop a job's 5 seeds never fit one call of 2 and are split as they come
    fake_engine.calls.clear()
    cfgs = [_cfg(compose, f"optimizer.learning_rate={lr}", "early_stop.enabled=false") for lr in (1e-4, 2e-4)]
    train_jobs(cfgs, [[]] * 2, max_population=2)
    assert [len(c) for c in fake_engine.calls] == [2, 2, 2, 2, 2]
    assert fake_engine.calls[2] == [(1e-4, 4), (2e-4, 0)]


def test_a_pruned_job_trains_none_of_its_queued_seeds(compose, fake_engine):
    cfgs = [_cfg(compose, f"optimizer.learning_rate={lr}", "early_stop.enabled=true") for lr in (1e-4, 2e-4)]
    heard = []

    def prune_first_job(job, event):
        heard.append((job, event.task))
        return job == 0

    results = train_jobs(cfgs, [[]] * 2, max_population=2, listeners=[prune_first_job])
    assert fake_engine.calls == [[(1e-4, 0), (1e-4, 1)], [(2e-4, 0), (2e-4, 1)], [(2e-4, 2), (2e-4, 3)], [(2e-4, 4)]]
    assert results[0]["status"] == "pruned" and results[0]["seeds"] == [0, 1] and results[0]["tasks_trained"] == [1, 1]
    assert results[1]["status"] == "ok" and results[1]["seeds"] == [0, 1, 2, 3, 4]


def test_batches_are_the_fewest_jobs_that_fill_every_call(compose):
    five = _cfg(compose, "early_stop.enabled=true")  # phase 1: 2 seeds, 5 in all
    assert jobs_per_batch(five, 2) == 2  # 4 and 10 models: calls of 2 all full
    assert jobs_per_batch(five, 256) == 256  # 512 and 1,280 models
    assert jobs_per_batch(_cfg(compose, "n_seeds=1"), 2) == 2  # one-seed trials (Optuna): 2 per call
    assert jobs_per_batch(_cfg(compose, "n_seeds=1"), 1) == 1


@pytest.mark.slow
def test_a_filled_batch_gives_each_job_the_numbers_it_gets_alone(compose, monkeypatch):
    """Real MNIST slice: 2 three-seed jobs in calls of 2 put seed 2 of the first job beside seed 0 of
    the second; every job's numbers are those it gets trained alone. On the plain XLA program, so on
    any CPU: where the fused kernel runs within its tolerance rather than bit for bit (an Intel Xeon),
    XLA's code around it differs between populations of 1 and 2 by float rounding (README)."""
    from cl_sweep.training import kernels

    monkeypatch.setenv(kernels.ENV_SWITCH, "0")
    cfgs = [_cfg(compose, f"optimizer.learning_rate={lr}", "n_seeds=3") for lr in (2e-4, 1e-4)]
    together = train_jobs(cfgs, [[]] * 2, max_population=2)
    alone = [train_jobs([c], [[]], max_population=2)[0] for c in cfgs]
    for a, b in zip(together, alone):
        assert a["final_accuracy"] == b["final_accuracy"] and a["accuracy_matrix"] == b["accuracy_matrix"]
    assert together[0]["final_accuracy"] != together[1]["final_accuracy"]
