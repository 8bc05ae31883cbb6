"""Tests for model=sdmlp (cl_sweep.models.sdmlp and its path through the engine and the trainer)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cl_sweep.training import engine
from cl_sweep.models import sdmlp
from cl_sweep.config import ConfigError
from cl_sweep.training.engine import Member, Structure
from cl_sweep.data.tasks import batch_schedule

from test_engine import BATCH, dataset, data, split  # noqa: F401  (the fake data set's fixtures)

SDM = Structure("relu", "sgd", model="sdmlp",
                model_static=dict(hidden_size=64, k=5, gaba_activations_per_epoch=100.0, grad_clip_norm=1.0))


def _norms(w1):
    return np.linalg.norm(np.asarray(w1), axis=-2)  # per hidden neuron (column of [in, hidden])


def test_init_is_non_negative_and_unit_norm():
    p = sdmlp.init_params(jax.random.PRNGKey(0), 50, 10, 784)
    assert float(jnp.min(p["w1"])) >= 0 and float(jnp.min(p["w2"])) >= 0
    np.testing.assert_allclose(_norms(p["w1"]), 1.0, rtol=1e-5)
    # about half the uniform init is clamped away, as in the reference
    assert 0.4 < float(jnp.mean(p["w1"] == 0)) < 0.6


def test_inputs_are_unit_norm_and_non_negative():
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (5, 784)), jnp.uint8)
    x = sdmlp.preprocess(jnp.concatenate([images, jnp.zeros((1, 784), jnp.uint8)]))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(x[:5]), axis=-1), 1.0, rtol=1e-5)
    assert float(jnp.min(x)) >= 0 and not np.any(np.asarray(x[5]))  # an all-zero image stays zero, no NaN


def test_gaba_switch_goes_from_excitation_to_top_k():
    """g = -1 at first (every neuron with a positive input stays on), +1 after T activations
    (exactly k neurons on: the (k+1)-th largest is subtracted)."""
    rng = np.random.default_rng(1)
    params = sdmlp.init_params(jax.random.PRNGKey(1), 64, 10, 784)
    x = sdmlp.preprocess(jnp.asarray(rng.integers(0, 256, (8, 784)), jnp.uint8))
    fresh = sdmlp.hidden(params, x, jnp.zeros(64), 5, 100.0)
    np.testing.assert_array_equal(np.asarray(fresh > 0), np.asarray(x @ params["w1"] > 0))
    done = sdmlp.hidden(params, x, jnp.full(64, 100.0), 5, 100.0)
    assert np.all(np.sum(np.asarray(done) > 0, axis=-1) == 5)
    np.testing.assert_allclose(np.asarray(sdmlp.gaba_sign(jnp.asarray([0.0, 50.0, 100.0, 1e9]), 100.0)), [-1, 0, 1, 1])


def test_weights_stay_non_negative_and_unit_norm_after_every_step(data, split):
    """The engine's own step, one step per call, on real-shaped data: after each the projection holds."""
    init, train_steps, _ = engine._programs(SDM)
    opt_hp = {"learning_rate": jnp.asarray([0.5, 5.0], jnp.float32)}
    state = init(jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)]), opt_hp)
    order = split.train_indices[0]
    idx, mask = batch_schedule(order, BATCH, -(-len(order) // BATCH))
    bidx = jnp.asarray(np.stack([idx, idx]))
    perm = jnp.arange(784, dtype=jnp.int32)
    before = np.asarray(state[0]["w1"]).copy()
    for step in range(len(idx)):
        state = train_steps(state, data.train_images, data.train_labels, bidx, jnp.asarray(mask),
                            jnp.int32(step), jnp.int32(step + 1), {}, opt_hp, perm)
        for w in ("w1", "w2"):
            assert float(jnp.min(state[0][w])) >= 0.0, (step, w)
        np.testing.assert_allclose(_norms(state[0]["w1"]), 1.0, rtol=1e-5, err_msg=f"step {step}")
    assert not np.allclose(np.asarray(state[0]["w1"]), before)  # it did learn
    counts = np.asarray(state[3]["counts"])
    assert counts.shape == (2, 64) and counts.max() > 0  # the GABA counters advanced


def test_sdmlp_learns_the_fake_tasks_and_is_deterministic(data, split):
    """SDMLP learns slowly (non-negative output weights must overtake the old classes'), so the
    fake tasks get 4 epochs here."""
    members = [Member(0, {}, {"learning_rate": 2.0})]
    a = engine.train_population(SDM, members, data, split, batch_size=BATCH, epochs_per_task=4, progress=False)
    b = engine.train_population(SDM, members, data, split, batch_size=BATCH, epochs_per_task=4, progress=False)
    np.testing.assert_array_equal(a.accuracy_matrix, b.accuracy_matrix)
    assert np.all(np.diagonal(a.accuracy_matrix[0]) > 0.5)


@pytest.mark.parametrize(
    "override, key",
    [("model.k=1000", "model.k=1000"), ("model.weight_norm=[true,false]", "model.weight_norm"),
     ("model.grad_clip_norm=-1.0", "model.grad_clip_norm=-1.0"), ("model.gaba_activations_per_epoch=0", "model.gaba_activations_per_epoch")],
)
def test_sdmlp_bad_values_raise_config_error(compose, override, key):
    from cl_sweep.config import validate

    validate(compose(["model=sdmlp"]))
    with pytest.raises(ConfigError) as info:
        validate(compose(["model=sdmlp", override]))
    assert key in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_sdmlp_job_on_real_mnist_slice(tmp_path):
    """`model=sdmlp` through the Hydra entry point on a slice of real MNIST: the result names the
    model and its own activation, and records the model's keys."""
    import json
    import subprocess
    import sys

    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "cl_sweep", "model=sdmlp", "optimizer=sgd", "optimizer.learning_rate=2.0",
         "benchmark.limit_per_task=1000", "model.gaba_activations_per_epoch=300", "n_seeds=2", "progress=false", f"hydra.run.dir={out}"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((out / "result.json").read_text())
    assert r["model"] == "sdmlp" and r["activation"] == "sdm_topk" and r["optimizer"] == "sgd"
    assert r["hyperparameters"]["model.k"] == 10 and "activation.alpha" not in r["hyperparameters"]
    assert r["status"] == "ok"
    # each task is learned while it is the newest (measured: diagonals 1.0 0.86 0.89 0.98 0.62 and
    # 1.0 0.69 0.71 0.90 0.90); what it keeps of old tasks after 16 steps per task is small
    for m in r["accuracy_matrix"]:
        diagonal = np.diagonal(np.asarray(m, float))
        assert diagonal[0] > 0.95 and diagonal.mean() > 0.6, diagonal
    # once the switch is done about k of the 1000 neurons fire
    assert 0.005 < r["active_fraction"][0][-1] < 0.05
