"""Tests for cl_sweep.components.activations: hand-computed values, sparsity, registry, vmap with traced hyperparameters.

The formulas are docs/protocol.md's "Activations" section; statistics are per example (row) over the
hidden units, std is the population std (ddof=0).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cl_sweep.components.activations import ACTIVATIONS, get_activation

ALL_NAMES = (
    "ash", "hard_ash", "topk_subtract", "topk_mask", "lwta",
    "relu", "swish", "sigmoid", "hard_sigmoid", "elephant",
)


def _sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def _hard_sigmoid(t: float) -> float:
    return min(max(t + 3.0, 0.0), 6.0) / 6.0


@functools.cache
def _jitted(name: str):
    act = get_activation(name)
    return jax.jit(act.fn, static_argnames=act.static)


def _call(name: str, x, **hp):
    """The activation under jit, traced hyperparameters as arrays: one compile per input shape."""
    act = get_activation(name)
    hp = {k: (v if k in act.static else jnp.asarray(v)) for k, v in hp.items()}
    return np.asarray(_jitted(name)(jnp.asarray(x, jnp.float32), **hp))


def _close(actual, expected, rtol=1e-6, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected, np.float64), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# Hand-computed examples
# ---------------------------------------------------------------------------------------------

# Three rows whose per-row mean / population std are exact by construction (every value is
# mean ± std): row 0 mean 1 std 2, row 1 mean 4 std 1, row 2 mean 1 std 0.5.
ROWS = np.array(
    [
        [3, -1, 3, -1, 3, -1, 3, -1],
        [5, 3, 5, 3, 3, 5, 3, 5],
        [1.5, 0.5, 1.5, 0.5, 0.5, 1.5, 0.5, 1.5],
    ],
    np.float32,
)
ROW_MEAN = (1.0, 4.0, 1.0)
ROW_STD = (2.0, 1.0, 0.5)


def test_rows_have_the_constructed_statistics():
    _close(ROWS.mean(axis=1), ROW_MEAN)
    _close(ROWS.std(axis=1), ROW_STD)


def test_ash_hand_computed():
    # alpha 2, z_k 0.5: threshold = mean + z_k * std = 2 (row 0), 4.5 (row 1), 1.25 (row 2).
    r0_hi, r0_lo = 3 * _sigmoid(2 * (3 - 2)), -1 * _sigmoid(2 * (-1 - 2))
    r1_hi, r1_lo = 5 * _sigmoid(2 * (5 - 4.5)), 3 * _sigmoid(2 * (3 - 4.5))
    r2_hi, r2_lo = 1.5 * _sigmoid(2 * (1.5 - 1.25)), 0.5 * _sigmoid(2 * (0.5 - 1.25))
    expected = [
        [r0_hi, r0_lo, r0_hi, r0_lo, r0_hi, r0_lo, r0_hi, r0_lo],
        [r1_hi, r1_lo, r1_hi, r1_lo, r1_lo, r1_hi, r1_lo, r1_hi],
        [r2_hi, r2_lo, r2_hi, r2_lo, r2_lo, r2_hi, r2_lo, r2_hi],
    ]
    _close(_call("ash", ROWS, alpha=2.0, z_k=0.5), expected)


def test_hard_ash_hand_computed():
    # alpha 1, z_k 0.5, beta 2; thresholds 2, 4.5, 1.25.
    # row 0: x=3 -> clip 2 * hard_sigmoid(1) = 2 * 4/6;  x=-1 -> clip 0.
    # row 1: x=5 -> 2 * hard_sigmoid(0.5) = 2 * 3.5/6;  x=3 -> 2 * hard_sigmoid(-1.5) = 2 * 1.5/6.
    # row 2: x=1.5 -> 1.5 * hard_sigmoid(0.25) = 1.5 * 3.25/6;  x=0.5 -> 0.5 * hard_sigmoid(-0.75) = 0.5 * 2.25/6.
    a, b, c, d, e = 4 / 3, 7 / 6, 0.5, 1.5 * 3.25 / 6, 0.5 * 2.25 / 6
    expected = np.array(
        [
            [a, 0, a, 0, a, 0, a, 0],
            [b, c, b, c, c, b, c, b],
            [d, e, d, e, e, d, e, d],
        ]
    )
    _close(_call("hard_ash", ROWS, alpha=1.0, z_k=0.5, beta=2.0), expected)
    # beta is the clip ceiling: with beta 4 the row-1 values of 5 and 3 are clipped to 4 and 3.
    out = _call("hard_ash", ROWS, alpha=1.0, z_k=0.5, beta=4.0)
    hi, lo = 4 * 3.5 / 6, 3 * 1.5 / 6
    _close(out[1], [hi, lo, hi, lo, lo, hi, lo, hi])


def test_hard_ash_is_zero_below_the_hard_sigmoid_floor():
    # hard_sigmoid(alpha * (x - thr)) is 0 once alpha * (x - thr) <= -3: with alpha 3, z_k 0.5
    # row 1 (threshold 4.5) has x=3 at 3 * (-1.5) = -4.5 -> 0, x=5 at 3 * 0.5 -> 2 * 4.5/6.
    out = _call("hard_ash", ROWS, alpha=3.0, z_k=0.5, beta=2.0)
    _close(out[1], [1.5, 0, 1.5, 0, 0, 1.5, 0, 1.5])


TOPK_X = np.array(
    [
        [0.5, 4.0, -1.0, 2.0, 1.5, 0.0],
        [-0.5, -3.0, -1.0, -2.0, -0.25, -4.0],
    ],
    np.float32,
)


def test_topk_subtract_hand_computed():
    # k=3: row 0 v = 1.5 -> clip(x - 1.5, 0, 2) (4.0 - 1.5 = 2.5 is clipped to 2);
    # row 1 v = -1.0 -> clip(x + 1, 0, 2).
    _close(_call("topk_subtract", TOPK_X, k=3), [[0, 2, 0, 0.5, 0, 0], [0.5, 0, 0, 0, 0.75, 0]])
    # k=1: v is the row max, so nothing is strictly above it.
    _close(_call("topk_subtract", TOPK_X, k=1), np.zeros_like(TOPK_X))
    # k=6: v is the row min (-1 and -4), so every value but the min is positive, clipped at 2.
    _close(_call("topk_subtract", TOPK_X, k=6), [[1.5, 2, 0, 2, 2, 1], [2, 1, 2, 2, 2, 0]])


def test_topk_mask_hand_computed():
    _close(_call("topk_mask", TOPK_X, k=3), [[0, 4, 0, 2, 1.5, 0], [-0.5, 0, -1, 0, -0.25, 0]])
    _close(_call("topk_mask", TOPK_X, k=1), [[0, 4, 0, 0, 0, 0], [0, 0, 0, 0, -0.25, 0]])
    _close(_call("topk_mask", TOPK_X, k=6), TOPK_X)


def test_lwta_hand_computed():
    # 2 groups of 3 consecutive units: the max of each block keeps its value (even if negative).
    _close(_call("lwta", TOPK_X, groups=2), [[0, 4, 0, 2, 0, 0], [-0.5, 0, 0, 0, -0.25, 0]])
    # 3 groups of 2.
    _close(_call("lwta", TOPK_X, groups=3), [[0, 4, 0, 2, 1.5, 0], [-0.5, 0, -1, 0, -0.25, 0]])
    # 1 group: only the row max survives; 6 groups of 1: identity.
    _close(_call("lwta", TOPK_X, groups=1), [[0, 4, 0, 0, 0, 0], [0, 0, 0, 0, -0.25, 0]])
    _close(_call("lwta", TOPK_X, groups=6), TOPK_X)


POINTWISE_X = [-4.0, -3.0, -1.0, 0.0, 1.5, 3.0, 5.0]


def test_relu_hand_computed():
    _close(_call("relu", [POINTWISE_X]), [[0, 0, 0, 0, 1.5, 3, 5]])


def test_hard_sigmoid_hand_computed():
    # relu6(x + 3) / 6
    _close(_call("hard_sigmoid", [POINTWISE_X]), [[0, 0, 2 / 6, 0.5, 4.5 / 6, 1, 1]])
    _close(_call("hard_sigmoid", [POINTWISE_X]), [[_hard_sigmoid(v) for v in POINTWISE_X]])


def test_sigmoid_hand_computed():
    _close(_call("sigmoid", [POINTWISE_X]), [[1 / (1 + math.exp(-v)) for v in POINTWISE_X]])
    assert _call("sigmoid", [[0.0]])[0, 0] == 0.5


def test_swish_hand_computed():
    _close(_call("swish", [POINTWISE_X]), [[v / (1 + math.exp(-v)) for v in POINTWISE_X]])
    assert _call("swish", [[0.0]])[0, 0] == 0.0


def test_elephant_hand_computed():
    x = [[0.0, 0.5, -0.5, 1.0, -1.5]]
    # a = 0.5: |x / a| = 0, 1, 1, 2, 3.
    _close(_call("elephant", x, a=0.5, d=2.0), [[1, 1 / 2, 1 / 2, 1 / 5, 1 / 10]])
    _close(_call("elephant", x, a=0.5, d=4.0), [[1, 1 / 2, 1 / 2, 1 / 17, 1 / 82]])


# ---------------------------------------------------------------------------------------------
# Formula references on random inputs (numpy, float64)
# ---------------------------------------------------------------------------------------------


def _np_threshold(x, z_k):
    return x.mean(-1, keepdims=True) + z_k * x.std(-1, keepdims=True)


def _np_hard_sigmoid(u):
    return np.clip(u + 3.0, 0.0, 6.0) / 6.0


def _np_kth(x, k):
    return -np.sort(-x, axis=-1)[..., k - 1 : k]


NP_REFERENCE = {
    "ash": lambda x, alpha, z_k: x / (1 + np.exp(-alpha * (x - _np_threshold(x, z_k)))),
    "hard_ash": lambda x, alpha, z_k, beta: np.clip(x, 0, beta) * _np_hard_sigmoid(alpha * (x - _np_threshold(x, z_k))),
    "topk_subtract": lambda x, k: np.clip(x - _np_kth(x, k), 0, 2),
    "topk_mask": lambda x, k: np.where(x >= _np_kth(x, k), x, 0),
    "lwta": lambda x, groups: np.where(
        (b := x.reshape(*x.shape[:-1], groups, -1)) == b.max(-1, keepdims=True), b, 0
    ).reshape(x.shape),
    "relu": lambda x: np.maximum(x, 0),
    "swish": lambda x: x / (1 + np.exp(-x)),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "hard_sigmoid": _np_hard_sigmoid,
    "elephant": lambda x, a, d: 1 / (1 + np.abs(x / a) ** d),
}

DEFAULT_HP = {
    "ash": dict(alpha=3.0, z_k=2.3),
    "hard_ash": dict(alpha=3.0, z_k=2.3, beta=2.0),
    "topk_subtract": dict(k=4),
    "topk_mask": dict(k=4),
    "lwta": dict(groups=3),
    "relu": {},
    "swish": {},
    "sigmoid": {},
    "hard_sigmoid": {},
    "elephant": dict(a=0.5, d=4.0),
}


@pytest.mark.parametrize("name", ALL_NAMES)
def test_matches_numpy_formula_on_random_2x6(name):
    x = np.random.default_rng(7).normal(size=(2, 6)).astype(np.float32)
    hp = DEFAULT_HP[name]
    # alpha 3, z_k 0.3 so that hard_ash is not all zero on 6 units
    if name in ("ash", "hard_ash"):
        hp = {**hp, "z_k": 0.3}
    expected = NP_REFERENCE[name](x.astype(np.float64), **hp)
    _close(_call(name, x, **hp), expected, rtol=1e-5, atol=1e-6)
    if name == "hard_ash":
        assert np.any(expected != 0)


# ---------------------------------------------------------------------------------------------
# Sparsity properties
# ---------------------------------------------------------------------------------------------


def test_hard_ash_defaults_zero_most_units_of_gaussian_preactivations():
    # x ~ N(0, 1): a unit is non-zero iff x > 0 and 3 (x - 2.3) > -3, i.e. x > 1.3 (taking
    # mean 0, std 1), so the zero fraction is Phi(1.3) ~ 0.903.
    x = jax.random.normal(jax.random.PRNGKey(0), (256, 1000))
    y = _call("hard_ash", x, alpha=3.0, z_k=2.3, beta=2.0)
    zero_fraction = np.mean(y == 0.0, axis=-1)
    phi = 0.5 * (1 + math.erf(1.3 / math.sqrt(2)))
    assert zero_fraction.mean() > 0.9
    assert abs(zero_fraction.mean() - phi) < 0.005
    assert zero_fraction.min() > 0.85
    assert np.all(y >= 0) and np.all(y <= 2.0)


def _distinct(rows: int, width: int, seed: int) -> np.ndarray:
    """Rows of distinct non-zero values (a shuffled grid), so the k-th largest is unique."""
    rng = np.random.default_rng(seed)
    x = (np.stack([rng.permutation(width) for _ in range(rows)]) + 0.5).astype(np.float32) * 0.01 - 3.0
    assert all(len(np.unique(r)) == width for r in x) and np.all(x != 0)
    return x


@pytest.mark.parametrize("k", [1, 2, 17, 64, 999, 1000])
def test_topk_mask_keeps_exactly_k_distinct_values(k):
    x = _distinct(16, 1000, seed=k)
    y = _call("topk_mask", x, k=k)
    nonzero = y != 0
    np.testing.assert_array_equal(nonzero.sum(-1), k)
    # the kept ones are the k largest, unchanged
    np.testing.assert_array_equal(y[nonzero], np.asarray(x)[nonzero])
    np.testing.assert_array_equal(nonzero, np.asarray(x) >= _np_kth(np.asarray(x), k))


@pytest.mark.parametrize("k", [1, 2, 17, 64, 1000])
def test_topk_subtract_keeps_at_most_k(k):
    x = _distinct(16, 1000, seed=k)
    y = _call("topk_subtract", x, k=k)
    counts = (y != 0).sum(-1)
    assert np.all(counts <= k)
    # for distinct values exactly the k-1 strictly above v_k are positive
    np.testing.assert_array_equal(counts, k - 1)
    assert np.all(y >= 0) and np.all(y <= 2)


def test_topk_with_ties_keeps_at_least_k():
    # all equal: v_k equals every value, mask keeps all, subtract keeps none.
    x = jnp.full((2, 8), 0.5)
    assert np.all(_call("topk_mask", x, k=3) == 0.5)
    assert np.all(_call("topk_subtract", x, k=3) == 0)


@pytest.mark.parametrize("groups", [1, 10, 50, 100, 1000])
def test_lwta_one_winner_per_group_for_positive_inputs(groups):
    x = jnp.abs(jax.random.normal(jax.random.PRNGKey(groups), (8, 1000))) + 1e-3
    y = _call("lwta", x, groups=groups)
    blocks_y = y.reshape(8, groups, -1)
    blocks_x = np.asarray(x).reshape(8, groups, -1)
    np.testing.assert_array_equal((blocks_y != 0).sum(-1), 1)
    # the survivor is the block max, with its value
    np.testing.assert_array_equal(blocks_y.max(-1), blocks_x.max(-1))
    np.testing.assert_array_equal(np.argmax(blocks_y, -1), np.argmax(blocks_x, -1))


def test_lwta_exactly_one_winner_under_ties():
    x = jnp.ones((1, 6))
    y = _call("lwta", x, groups=2)
    np.testing.assert_array_equal((y.reshape(2, 3) != 0).sum(-1), [1, 1])


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_all_activations_registered_with_their_hyperparameters():
    assert set(ALL_NAMES) <= set(ACTIVATIONS)
    for name in ALL_NAMES:
        act = get_activation(name)
        assert act.name == name
        assert set(act.traced) | set(act.static) == set(DEFAULT_HP[name])
    assert get_activation("lwta").static == ("groups",)
    assert get_activation("lwta").traced == ()
    assert get_activation("topk_mask").traced == ("k",)


def test_unknown_activation_names_allowed_ones():
    with pytest.raises(ValueError) as info:
        get_activation("nope")
    message = str(info.value)
    assert "nope" in message
    for name in ALL_NAMES:
        assert name in message


# ---------------------------------------------------------------------------------------------
# vmap over a population with traced (per-member) hyperparameters
# ---------------------------------------------------------------------------------------------

# Three members' hyperparameters; static ones (LWTA's groups) are shared by the population.
POPULATION_HP = {
    "ash": dict(alpha=[3.0, 4.0, 1.0], z_k=[2.3, 0.5, -0.2]),
    "hard_ash": dict(alpha=[3.0, 4.0, 1.0], z_k=[2.3, 0.5, -0.2], beta=[2.0, 1.0, 3.0]),
    "topk_subtract": dict(k=[1, 5, 12]),
    "topk_mask": dict(k=[2, 7, 12]),
    "lwta": {},
    "relu": {},
    "swish": {},
    "sigmoid": {},
    "hard_sigmoid": {},
    "elephant": dict(a=[0.02, 0.5, 1.0], d=[4.0, 2.0, 3.0]),
}
STATIC_HP = {"lwta": dict(groups=4)}


@pytest.mark.parametrize("name", ALL_NAMES)
def test_vmap_with_traced_hyperparameters_matches_unbatched(name):
    act = get_activation(name)
    static = STATIC_HP.get(name, {})
    per_member = POPULATION_HP[name]
    assert set(per_member) == set(act.traced)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 12))  # [P, B, H]
    hp_arrays = {
        k: jnp.asarray(v, jnp.int32 if isinstance(v[0], int) else jnp.float32) for k, v in per_member.items()
    }

    batched = jax.jit(jax.vmap(lambda x, hp: act.fn(x, **hp, **static)))(x, hp_arrays)
    assert batched.shape == x.shape
    for p in range(3):
        hp_p = {k: v[p] for k, v in per_member.items()}
        single = _call(name, x[p], **hp_p, **static)
        _close(batched[p], single, rtol=1e-6, atol=1e-6)
        # and the member's own numpy formula
        _close(batched[p], NP_REFERENCE[name](np.asarray(x[p], np.float64), **hp_p, **static), rtol=1e-5, atol=1e-6)
    if per_member:  # different hyperparameters really give different members
        assert not np.allclose(batched[0], batched[2])
