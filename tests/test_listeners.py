"""Task-end listeners (`train_jobs(listeners=...)`): what trackers and pruners hear from the one host loop.

Real MNIST slices; a population cap of 2 splits a 3-seed job over two calls, as on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from cl_sweep.training.train import train_jobs
from conftest import TEST_SLICE

pytestmark = pytest.mark.slow


def _cfg(compose, *overrides):
    return OmegaConf.to_container(compose(["benchmark.limit_per_task=64", TEST_SLICE, "progress=false",
                                           *overrides]), resolve=True)


def _heard(cfgs, **kw):
    events = []
    results = train_jobs(cfgs, [[]] * len(cfgs), listeners=[lambda job, e: events.append((job, e))], **kw)
    return results, events


# FlyModel's own trainer passes the hook on too: one job of one seed is enough to show it (its calls are slow).
@pytest.mark.parametrize("model,seeds", [("mlp", (3, 1)), ("flymodel", (1,))])
def test_every_job_seed_and_task_is_heard_once_with_the_results_numbers(compose, model, seeds):
    cfgs = [_cfg(compose, f"model={model}", f"n_seeds={n}", f"seed={7 * j}", f"optimizer.learning_rate={0.01 * (j + 1)}")
            for j, n in enumerate(seeds)]
    results, events = _heard(cfgs, max_population=2)
    T = len(results[0]["accuracy_matrix"][0])
    heard = {}
    for job, e in events:
        assert e.num_tasks == T and e.steps > 0 and e.elapsed_s > 0
        assert len(e.seeds) == len(e.accuracy_matrix) == len(e.overall_accuracy) == len(e.diverged)
        for i, seed in enumerate(e.seeds):
            assert (job, seed, e.task) not in heard  # once per (job, seed, task)
            heard[(job, seed, e.task)] = (e.accuracy_matrix[i, e.task], e.overall_accuracy[i, e.task],
                                          e.active_fraction[i, e.task])
            assert np.isnan(e.accuracy_matrix[i, e.task + 1 :]).all()  # later rows are not known yet
    assert sorted(heard) == sorted((j, s, t) for j, r in enumerate(results) for s in r["seeds"] for t in range(T))
    for (job, seed, t), (row, overall, active) in heard.items():
        r = results[job]
        i = r["seeds"].index(seed)
        np.testing.assert_array_equal(row, np.array(r["accuracy_matrix"][i][t], float))
        assert active == r["active_fraction"][i][t]
        if t == T - 1:
            assert overall == r["final_accuracy"][i]


def test_listening_changes_no_number(compose):
    cfg = _cfg(compose, "n_seeds=2")
    plain = train_jobs([cfg], [[]])[0]
    heard, events = _heard([cfg])
    assert events and heard[0]["accuracy_matrix"] == plain["accuracy_matrix"]
