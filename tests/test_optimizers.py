"""Tests for cl_sweep.components.optimizers: factories equal optax's constructors, the elementwise update clip, traced hyperparameters."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cl_sweep.components.optimizers import OPTIMIZERS, get_optimizer, with_update_clip

# docs/protocol.md, "The A.6 grids": the default column.
DEFAULTS = {
    "adagrad": dict(learning_rate=2e-4, initial_accumulator_value=1e-6),
    "rmsprop": dict(learning_rate=5.5e-6, decay=0.9993),
    "adam": dict(learning_rate=1e-5, b1=0.98, b2=0.9995),
    "sgd": dict(learning_rate=4e-4),
    "sgdm": dict(learning_rate=1e-5, momentum=0.994),
}

# The optax constructor each one must equal ("Optimizers (optax semantics)").
REFERENCE = {
    "adagrad": lambda learning_rate, initial_accumulator_value: optax.adagrad(
        learning_rate, initial_accumulator_value=initial_accumulator_value
    ),
    "rmsprop": lambda learning_rate, decay: optax.rmsprop(learning_rate, decay=decay),
    "adam": lambda learning_rate, b1, b2: optax.adam(learning_rate, b1=b1, b2=b2),
    "sgd": lambda learning_rate: optax.sgd(learning_rate),
    "sgdm": lambda learning_rate, momentum: optax.sgd(learning_rate, momentum=momentum),
}

NAMES = tuple(DEFAULTS)
STEPS = 4
CLIP = 0.01


SHAPES = {"w1": (6, 5), "w2": (5, 3)}


def _params():
    rng = np.random.default_rng(0)
    return {name: jnp.asarray(rng.normal(size=shape), jnp.float32) for name, shape in SHAPES.items()}


def _grads(seed: int, steps: int = STEPS):
    """A sequence of random gradient pytrees, leading axis = step."""
    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.normal(size=(steps, *shape)), jnp.float32) for name, shape in SHAPES.items()}


def _run(tx: optax.GradientTransformation, grads, params=None):
    """Feeds the gradient sequence through ``tx`` (applying the updates), returns the stacked updates."""
    params = _params() if params is None else params
    state = tx.init(params)
    updates_seq = []
    steps = jax.tree_util.tree_leaves(grads)[0].shape[0]
    for i in range(steps):
        g = jax.tree_util.tree_map(lambda a: a[i], grads)
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        updates_seq.append(updates)
    return jax.tree_util.tree_map(lambda *u: jnp.stack(u), *updates_seq)


def _assert_tree_close(actual, expected, rtol=1e-6):
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * float(np.max(np.abs(e))))


def _leaves(tree) -> np.ndarray:
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree_util.tree_leaves(tree)])


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registered_with_protocol_hyperparameters():
    assert set(NAMES) <= set(OPTIMIZERS)
    for name, hp in DEFAULTS.items():
        opt = get_optimizer(name)
        assert opt.name == name
        assert set(opt.hyperparameters) == set(hp)


def test_unknown_optimizer_names_allowed_ones():
    with pytest.raises(ValueError) as info:
        get_optimizer("nope")
    assert "nope" in str(info.value)
    for name in NAMES:
        assert name in str(info.value)


# ---------------------------------------------------------------------------------------------
# Factories equal optax's reference constructors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_factory_equals_optax_reference_at_protocol_defaults(name):
    hp = DEFAULTS[name]
    grads = _grads(seed=1)
    ours = _run(get_optimizer(name).factory(**hp), grads)
    reference = _run(REFERENCE[name](**hp), grads)
    _assert_tree_close(ours, reference)
    assert np.all(np.isfinite(_leaves(ours)))
    assert np.any(_leaves(ours) != 0)


def test_adagrad_tiny_accumulator_gives_large_first_step():
    # paper A.6: the first Adagrad step is lr * g / sqrt(g^2 + 1e-6) ~ lr * sign(g) for |g| >> 1e-3.
    grads = _grads(seed=2, steps=1)
    u = _run(get_optimizer("adagrad").factory(**DEFAULTS["adagrad"]), grads)
    g = _leaves(grads)
    big = np.abs(g) > 0.1
    np.testing.assert_allclose(_leaves(u)[big], -2e-4 * np.sign(g[big]), rtol=1e-3)


def test_sgd_update_is_minus_lr_times_gradient():
    grads = _grads(seed=3)
    u = _run(get_optimizer("sgd").factory(learning_rate=0.5), grads)
    np.testing.assert_allclose(_leaves(u), -0.5 * _leaves(grads), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The elementwise update clip
# ---------------------------------------------------------------------------------------------

# Learning rates large enough that some updates exceed the clip, so the properties are not vacuous.
LARGE = {name: {**hp, "learning_rate": 0.1} for name, hp in DEFAULTS.items()}


@pytest.mark.parametrize("name", NAMES)
def test_update_clip_bounds_every_update(name):
    grads = _grads(seed=4)
    tx = get_optimizer(name).factory(**LARGE[name])
    unclipped = _leaves(_run(tx, grads))
    clipped = _leaves(_run(with_update_clip(tx, CLIP), grads))
    assert np.any(np.abs(unclipped) > CLIP)  # non-vacuous
    assert np.all(np.abs(clipped) <= CLIP)


@pytest.mark.parametrize("name", NAMES)
def test_update_clip_equals_clip_of_unclipped_update(name):
    # The clip acts on the output only, so the inner state (and every unclipped update) evolves
    # as without it, given the same gradients.
    grads = _grads(seed=5)
    tx = get_optimizer(name).factory(**LARGE[name])
    unclipped = _leaves(_run(tx, grads))
    clipped = _leaves(_run(with_update_clip(tx, CLIP), grads))
    np.testing.assert_array_equal(clipped, np.clip(unclipped, np.float32(-CLIP), np.float32(CLIP)))
    # updates within the bound are untouched, the others land exactly on it with their sign
    inside = np.abs(unclipped) <= CLIP
    np.testing.assert_array_equal(clipped[inside], unclipped[inside])
    np.testing.assert_array_equal(np.abs(clipped[~inside]), np.float32(CLIP))
    np.testing.assert_array_equal(np.sign(clipped), np.sign(unclipped))


@pytest.mark.parametrize("name", NAMES)
def test_update_clip_is_idempotent(name):
    grads = _grads(seed=6)
    tx = get_optimizer(name).factory(**LARGE[name])
    once = _run(with_update_clip(tx, CLIP), grads)
    twice = _run(with_update_clip(with_update_clip(tx, CLIP), CLIP), grads)
    np.testing.assert_array_equal(_leaves(twice), _leaves(once))
    # and clipping an already clipped update directly changes nothing
    clip = optax.clip(CLIP)
    again, _ = clip.update(once, clip.init(once))
    np.testing.assert_array_equal(_leaves(again), _leaves(once))


@pytest.mark.parametrize("bound", [1e-6, 0.01, 0.5, 100.0])
def test_update_clip_bound_property_for_any_bound(bound):
    grads = _grads(seed=7)
    tx = with_update_clip(optax.sgd(1.0), bound)
    u = _leaves(_run(tx, grads))
    g = _leaves(grads)
    assert np.all(np.abs(u) <= np.float32(bound))
    np.testing.assert_array_equal(u, np.clip(-g, -np.float32(bound), np.float32(bound)))


@pytest.mark.parametrize("name", NAMES)
def test_update_clip_none_leaves_tx_unchanged(name):
    tx = get_optimizer(name).factory(**DEFAULTS[name])
    assert with_update_clip(tx, None) is tx


# ---------------------------------------------------------------------------------------------
# Traced hyperparameters under vmap
# ---------------------------------------------------------------------------------------------

# Three members each: different learning rates and, where there is one, a different second
# hyperparameter.
POPULATION = {
    "adagrad": dict(learning_rate=[1e-4, 2e-4, 1e-2], initial_accumulator_value=[1e-6, 1e-3, 0.1]),
    "rmsprop": dict(learning_rate=[4e-6, 5.5e-6, 1e-3], decay=[0.998, 0.9993, 0.9]),
    "adam": dict(learning_rate=[8e-6, 1e-5, 1e-3], b1=[0.9, 0.98, 0.5], b2=[0.999, 0.9995, 0.99]),
    "sgd": dict(learning_rate=[3e-4, 4e-4, 0.1]),
    "sgdm": dict(learning_rate=[8e-6, 1e-5, 1e-2], momentum=[0.99, 0.994, 0.5]),
}


@pytest.mark.parametrize("clip", [None, CLIP])
@pytest.mark.parametrize("name", NAMES)
def test_traced_hyperparameters_under_vmap_equal_separate_runs(name, clip):
    factory = get_optimizer(name).factory
    per_member = POPULATION[name]
    assert set(per_member) == set(DEFAULTS[name])
    P = 3
    member_grads_list = [_grads(10 + p) for p in range(P)]
    grads = jax.tree_util.tree_map(lambda *g: jnp.stack(g), *member_grads_list)  # [P, steps, ...]
    hp_arrays = {k: jnp.asarray(v, jnp.float32) for k, v in per_member.items()}
    params = _params()

    @jax.jit
    @functools.partial(jax.vmap, in_axes=(0, 0))
    def population(hp, member_grads):
        return _run(with_update_clip(factory(**hp), clip), member_grads, params)

    batched = population(hp_arrays, grads)
    separate = []
    for p in range(P):
        # the member's values as float32 scalars, as the population holds them (a Python float
        # like b2 = 0.999 rounds differently in 1 - b2 than its float32 does)
        hp_p = {k: np.float32(v[p]) for k, v in per_member.items()}
        separate.append(_run(with_update_clip(factory(**hp_p), clip), member_grads_list[p]))
        _assert_tree_close(jax.tree_util.tree_map(lambda a: a[p], batched), separate[p], rtol=1e-5)
    # per-member hyperparameters really give per-member updates
    assert not np.allclose(_leaves(separate[0]), _leaves(separate[2]))


# --- paper A.8 and A.9 options -------------------------------------------------------------


def test_adam_without_bias_correction_uses_raw_moments():
    from cl_sweep.components.optimizers import adam

    lr, b1, b2 = 1e-3, 0.9, 0.999
    g = {"w": jnp.array([0.5, -2.0, 3.0])}
    raw = adam(learning_rate=lr, b1=b1, b2=b2, bias_correction=False)
    u, state = raw.update(g, raw.init(g))
    # first step from zero moments: mu = (1-b1) g, nu = (1-b2) g^2
    expected = -lr * (1 - b1) * g["w"] / (jnp.sqrt(1 - b2) * jnp.abs(g["w"]) + 1e-8)
    np.testing.assert_allclose(u["w"], expected, rtol=1e-6)
    # bias-corrected Adam's first step is ~lr in size; without correction it is (1-b1)/sqrt(1-b2) times that
    corrected = adam(learning_rate=lr, b1=b1, b2=b2, bias_correction=True)
    uc, _ = corrected.update(g, corrected.init(g))
    np.testing.assert_allclose(u["w"] / uc["w"], (1 - b1) / np.sqrt(1 - b2), rtol=1e-4)
    # the default is optax.adam itself
    ref = optax.adam(lr, b1=b1, b2=b2)
    np.testing.assert_array_equal(uc["w"], ref.update(g, ref.init(g))[0]["w"])
    assert int(state[0].count) == 1


def test_sgd_exp_decay_matches_optax_schedule_and_staircase():
    from cl_sweep.components.optimizers import sgd_exp_decay

    lr, rate, steps = 1e-2, 0.7, 200
    ours = sgd_exp_decay(learning_rate=lr, decay_rate=rate, transition_steps=steps, staircase=True)
    ref = optax.sgd(optax.exponential_decay(lr, steps, rate, staircase=True))
    g = {"w": jnp.ones(2)}
    so, sr = ours.init(g), ref.init(g)
    seen = {}
    for t in range(401):
        uo, so = ours.update(g, so)
        ur, sr = ref.update(g, sr)
        np.testing.assert_allclose(uo["w"], ur["w"], rtol=1e-6)
        seen[t] = float(-uo["w"][0])
    assert seen[0] == pytest.approx(lr) and seen[199] == pytest.approx(lr)
    assert seen[200] == pytest.approx(lr * rate) and seen[400] == pytest.approx(lr * rate**2)


def test_sgd_exp_decay_takes_traced_hyperparameters_under_vmap():
    from cl_sweep.components.optimizers import sgd_exp_decay

    def first_update(lr, rate):
        tx = sgd_exp_decay(learning_rate=lr, decay_rate=rate, transition_steps=1, staircase=True)
        g = jnp.ones(3)
        s = tx.init(g)
        _, s = tx.update(g, s)
        return tx.update(g, s)[0]  # second step: lr * rate

    out = jax.vmap(first_update)(jnp.array([1e-2, 2e-2]), jnp.array([0.5, 0.7]))
    np.testing.assert_allclose(out[:, 0], [-5e-3, -1.4e-2], rtol=1e-6)
