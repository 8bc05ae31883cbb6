"""Tests for cl_sweep.models.mlp: parameter count and shapes, Kaiming init, weight norm, preprocessing, forward."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cl_sweep.models import mlp
from cl_sweep.components.activations import get_activation
from cl_sweep.training.ops import weight_norm


@pytest.fixture(scope="module")
def params_1000():
    return mlp.init_params(jax.random.PRNGKey(0), 1000)


def test_parameter_count_and_shapes_hidden_1000(params_1000):
    assert set(params_1000) == {"w1", "w2"}  # no biases
    assert params_1000["w1"].shape == (784, 1000)
    assert params_1000["w2"].shape == (1000, 10)
    assert params_1000["w1"].dtype == params_1000["w2"].dtype == jnp.float32
    assert mlp.count_params(params_1000) == 784 * 1000 + 1000 * 10


@pytest.mark.parametrize("hidden,classes", [(1, 10), (7, 3), (32, 10)])
def test_shapes_other_sizes(hidden, classes):
    init = functools.partial(mlp.init_params, hidden_size=hidden, num_classes=classes)
    p = jax.eval_shape(init, jax.random.PRNGKey(1))  # shapes only, nothing compiled
    assert p["w1"].shape == (784, hidden) and p["w2"].shape == (hidden, classes)
    assert mlp.count_params(p) == 784 * hidden + hidden * classes


def test_kaiming_normal_init_statistics(params_1000):
    # N(0, 2 / fan_in): fan_in 784 for w1, 1000 for w2. The sample std of n normals has relative
    # standard error ~ 1/sqrt(2n): 0.08% for w1 (784k values), 0.7% for w2 (10k values); allow ~5 SE.
    for name, fan_in in (("w1", 784), ("w2", 1000)):
        w = np.asarray(params_1000[name], np.float64)
        expected_std = math.sqrt(2.0 / fan_in)
        rel_se = 1.0 / math.sqrt(2 * w.size)
        assert abs(w.std() / expected_std - 1) < 5 * rel_se
        assert abs(w.mean()) < 5 * expected_std / math.sqrt(w.size)
        # normal, not uniform: about 68.3% within one std
        assert abs(np.mean(np.abs(w) < expected_std) - 0.6827) < 0.02


def test_init_is_deterministic_per_key(params_1000):
    again = mlp.init_params(jax.random.PRNGKey(0), 1000)
    other = mlp.init_params(jax.random.PRNGKey(4), 1000)
    for k in params_1000:
        np.testing.assert_array_equal(again[k], params_1000[k])
        assert not np.allclose(other[k], params_1000[k])
    # the two layers use different keys: w2 is not a rescaled slice of w1's stream
    w1 = np.asarray(params_1000["w1"]).ravel()[:100] / math.sqrt(2 / 784)
    w2 = np.asarray(params_1000["w2"]).ravel()[:100] / math.sqrt(2 / 1000)
    assert not np.allclose(w1, w2)


# ---------------------------------------------------------------------------------------------
# Weight norm
# ---------------------------------------------------------------------------------------------


def _assert_unit_centred_columns(w):
    w = np.asarray(w, np.float64)
    np.testing.assert_allclose(w.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, rtol=1e-5)


def test_effective_weights_default_normalises_layer_1_only(params_1000):
    eff = mlp.effective_weights(params_1000, (True, False))
    assert set(eff) == {"w1", "w2"}
    assert eff["w1"].shape == (784, 1000)
    # each hidden unit's incoming weights (a column of w1) is zero-mean, unit L2 norm
    _assert_unit_centred_columns(eff["w1"])
    np.testing.assert_array_equal(eff["w2"], params_1000["w2"])
    # and it is the centred column rescaled, not any unit vector
    w1 = np.asarray(params_1000["w1"], np.float64)
    c = w1 - w1.mean(axis=0)
    np.testing.assert_allclose(eff["w1"], c / np.linalg.norm(c, axis=0), rtol=1e-4, atol=1e-6)


def test_effective_weights_both_layers(params_1000):
    eff = mlp.effective_weights(params_1000, (True, True))
    _assert_unit_centred_columns(eff["w1"])
    _assert_unit_centred_columns(eff["w2"])
    assert eff["w2"].shape == (1000, 10)


def test_effective_weights_off_is_raw(params_1000):
    eff = mlp.effective_weights(params_1000, (False, False))
    np.testing.assert_array_equal(eff["w1"], params_1000["w1"])
    np.testing.assert_array_equal(eff["w2"], params_1000["w2"])
    eff = mlp.effective_weights(params_1000, (False, True))
    np.testing.assert_array_equal(eff["w1"], params_1000["w1"])
    _assert_unit_centred_columns(eff["w2"])


def test_effective_weights_hand_computed():
    # column 0: [1, 2, 3] -> centred [-1, 0, 1] / sqrt(2)
    # column 1: [0, 0, 4] -> centred [-4/3, -4/3, 8/3], norm 4 sqrt(6) / 3 -> [-1, -1, 2] / sqrt(6)
    params = {"w1": jnp.array([[1.0, 0.0], [2.0, 0.0], [3.0, 4.0]]), "w2": jnp.array([[1.0], [3.0]])}
    eff = mlp.effective_weights(params, (True, True))
    s2, s6 = math.sqrt(2), math.sqrt(6)
    np.testing.assert_allclose(eff["w1"], [[-1 / s2, -1 / s6], [0, -1 / s6], [1 / s2, 2 / s6]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(eff["w2"], [[-1 / s2], [1 / s2]], rtol=1e-6)


def test_weight_norm_is_scale_and_shift_invariant_per_column(params_1000):
    # g is fixed at 1: rescaling / shifting a unit's raw weights does not change what it computes.
    w1 = params_1000["w1"][:, :50]
    scale = jnp.linspace(0.1, 10.0, 50)
    shift = jnp.linspace(-3.0, 3.0, 50)
    a = mlp.effective_weights({"w1": w1, "w2": params_1000["w2"]}, (True, False))["w1"]
    b = mlp.effective_weights({"w1": w1 * scale + shift, "w2": params_1000["w2"]}, (True, False))["w1"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Preprocessing and forward
# ---------------------------------------------------------------------------------------------


def test_preprocess_maps_pixel_range():
    x = jnp.array([[0, 255, 51]], jnp.uint8)
    y = np.asarray(mlp.preprocess(x))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[(0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081, (0.2 - 0.1307) / 0.3081]], rtol=1e-6)


def test_preprocess_keeps_shape_and_is_monotone():
    x = jnp.arange(256, dtype=jnp.uint8).reshape(1, 256)
    y = np.asarray(mlp.preprocess(x))
    assert y.shape == (1, 256)
    assert np.all(np.diff(y[0]) > 0)


HARD_ASH = functools.partial(get_activation("hard_ash").fn, alpha=3.0, z_k=2.3, beta=2.0)
ACTIVATIONS = {"relu": jax.nn.relu, "hard_ash": HARD_ASH}


@pytest.fixture(scope="module")
def small(params_1000):
    params = {"w1": params_1000["w1"][:, :64], "w2": params_1000["w2"][:64]}
    images = np.random.default_rng(6).integers(0, 256, size=(12, 784), dtype=np.uint8)
    return params, mlp.preprocess(jnp.asarray(images))


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("wn", [(True, False), (True, True), (False, False), (False, True)])
def test_forward_equals_straightforward_computation(small, act, wn):
    params, x = small
    fn = ACTIVATIONS[act]
    logits = mlp.forward(params, x, fn, wn)
    assert logits.shape == (12, 10)
    w1 = weight_norm(params["w1"]) if wn[0] else params["w1"]
    w2 = weight_norm(params["w2"]) if wn[1] else params["w2"]
    expected = fn(x @ w1) @ w2
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    # effective_weights are the weights forward multiplies by
    eff = mlp.effective_weights(params, wn)
    np.testing.assert_allclose(logits, fn(x @ eff["w1"]) @ eff["w2"], rtol=1e-4, atol=1e-5)


def test_forward_default_weight_norm_is_layer_1_only(small):
    params, x = small
    np.testing.assert_array_equal(
        mlp.forward(params, x, jax.nn.relu), mlp.forward(params, x, jax.nn.relu, (True, False))
    )


def test_hidden_pre_activations(small):
    params, x = small
    h = mlp.hidden(params, x, (True, False))
    assert h.shape == (12, 64)
    np.testing.assert_allclose(h, x @ weight_norm(params["w1"]), rtol=1e-4, atol=1e-5)
