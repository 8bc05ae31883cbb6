"""Continual-learning regularisers: penalties at and around their anchor, importances by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cl_sweep.components import strategies as S

PARAMS = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]]), "v": jnp.array([1.0, -2.0])}
IMPORTANCE = {"w": jnp.array([[1.0, 2.0], [0.5, 0.0]]), "v": jnp.array([3.0, 1.0])}
HP = {"lambda": jnp.float32(10.0), "gamma": jnp.float32(0.5)}


@pytest.mark.parametrize("name", ["ewc", "online_ewc", "mas"])
def test_penalty_is_zero_at_the_anchor_and_quadratic_away_from_it(name):
    state = S.consolidate(name, S.init_state(name, PARAMS), PARAMS, IMPORTANCE, HP)
    assert float(S.penalty(name, state, PARAMS, HP)) == pytest.approx(0.0, abs=1e-5)
    direction = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    pens = [float(S.penalty(name, state, jax.tree_util.tree_map(lambda p, d: p + t * d, PARAMS, direction), HP)) for t in (1.0, 2.0, 3.0)]
    assert pens[1] == pytest.approx(4 * pens[0], rel=1e-5) and pens[2] == pytest.approx(9 * pens[0], rel=1e-5)
    # 0.5 * lambda * sum(importance) for a unit step in every coordinate
    assert pens[0] == pytest.approx(0.5 * 10.0 * (1 + 2 + 0.5 + 0 + 3 + 1), rel=1e-5)


def test_no_penalty_before_the_first_task():
    for name in S.STRATEGIES:
        assert float(S.penalty(name, S.init_state(name, PARAMS), PARAMS, HP)) == 0.0


def test_ewc_keeps_one_anchor_per_task():
    p1 = PARAMS
    p2 = jax.tree_util.tree_map(lambda p: p + 1.0, PARAMS)
    f1, f2 = IMPORTANCE, jax.tree_util.tree_map(lambda f: 2.0 * f + 0.5, IMPORTANCE)
    state = S.consolidate("ewc", S.consolidate("ewc", S.init_state("ewc", PARAMS), p1, f1, HP), p2, f2, HP)
    theta = jax.tree_util.tree_map(lambda p: p * 0.3 - 0.7, PARAMS)
    by_hand = sum(
        float(jnp.sum(f[k] * (theta[k] - anchor[k]) ** 2)) for f, anchor in ((f1, p1), (f2, p2)) for k in PARAMS
    )
    assert float(S.penalty("ewc", state, theta, HP)) == pytest.approx(0.5 * 10.0 * by_hand, rel=1e-4)


def test_online_ewc_decays_old_importance_and_moves_the_anchor():
    p2 = jax.tree_util.tree_map(lambda p: p + 1.0, PARAMS)
    state = S.consolidate("online_ewc", S.consolidate("online_ewc", S.init_state("online_ewc", PARAMS), PARAMS, IMPORTANCE, HP), p2, IMPORTANCE, HP)
    np.testing.assert_allclose(state["importance"]["v"], 0.5 * IMPORTANCE["v"] + IMPORTANCE["v"])
    np.testing.assert_allclose(state["anchor"]["w"], p2["w"])


def linear(params, x):
    return params["w"] @ x


def test_empirical_fisher_matches_a_hand_computation():
    # log p(y|x) of a linear softmax model; for one example d/dW = (onehot(y) - softmax(Wx)) x^T
    params = {"w": jnp.array([[0.2, -0.1, 0.0], [0.05, 0.3, -0.2]])}
    xs = jnp.array([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0], [2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    ys = jnp.array([0, 1, 1, 0])

    def loglik(p, x, y):
        return jax.nn.log_softmax(linear(p, x))[y]

    got = S.empirical_fisher(loglik, params, xs, ys, chunk=2)
    expected = np.zeros((2, 3))
    for x, y in zip(np.asarray(xs), np.asarray(ys)):
        prob = np.exp(np.asarray(params["w"]) @ x)
        prob /= prob.sum()
        g = np.outer(np.eye(2)[y] - prob, x)
        expected += g**2 / len(xs)
    np.testing.assert_allclose(got["w"], expected, rtol=1e-5)


def test_mas_importance_matches_a_hand_computation():
    # ||W x||^2 has gradient 2 (W x) x^T with respect to W
    params = {"w": jnp.array([[0.2, -0.1, 0.0], [0.05, 0.3, -0.2]])}
    xs = jnp.array([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0], [2.0, 0.0, -1.0]])
    got = S.mas_importance(linear, params, xs, chunk=3)
    w = np.asarray(params["w"])
    expected = sum(np.abs(2 * np.outer(w @ x, x)) for x in np.asarray(xs)) / len(xs)
    np.testing.assert_allclose(got["w"], expected, rtol=1e-5)


def test_unknown_strategy_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="none, ewc, online_ewc, mas"):
        S.get_strategy("si")


# --- a user's strategy: one function, registered like the built-ins ------------------------------
@pytest.fixture(scope="module")
def l2_anchor():
    import cl_sweep
    from cl_sweep.components.registry import STRATEGIES

    @cl_sweep.register_strategy("l2_anchor_t", checks={"lambda": lambda v, cfg: None if v >= 0 else "it must be >= 0"})
    def l2_anchor(*, lambda_: float = 1.0):
        """A pull toward the last task's end point, every weight equally important (no importance estimate)."""
        leaves = jax.tree_util.tree_leaves

        def penalty(state, params):
            return 0.5 * lambda_ * state["on"] * sum(jnp.sum(jnp.square(p - a)) for p, a in zip(leaves(params), leaves(state["anchor"])))

        return cl_sweep.Regulariser(
            init=lambda params: {"anchor": params, "on": jnp.zeros((), jnp.float32)},
            penalty=penalty,
            consolidate=lambda state, params, importance: {"anchor": params, "on": jnp.ones((), jnp.float32)},
            importance=None,
        )

    yield "l2_anchor_t"
    STRATEGIES.unregister("l2_anchor_t")


def test_a_users_strategy_signature_is_its_schema(l2_anchor, compose):
    from cl_sweep.config import ConfigError, validate

    assert dict(compose([f"strategy={l2_anchor}"]).strategy) == {"name": l2_anchor, "lambda": 1.0}  # lambda_ is the key lambda
    assert S.get_strategy(l2_anchor).traced == ("lambda",)
    with pytest.raises(ConfigError, match=r"strategy.lamda=2.*Did you mean strategy.lambda"):
        validate(compose([f"strategy={l2_anchor}", "+strategy.lamda=2"]))
    with pytest.raises(ConfigError, match=r"strategy.lambda=-1.0 is not allowed; it must be >= 0"):
        validate(compose([f"strategy={l2_anchor}", "strategy.lambda=-1.0"]))
    with pytest.raises(ConfigError, match=r"strategy.samples=0 .*positive integer"):  # the built-ins' checks alike
        validate(compose(["strategy=ewc", "strategy.samples=0"]))


@pytest.mark.slow
def test_a_users_strategy_trains_per_member_in_one_population(l2_anchor, compose):
    from omegaconf import OmegaConf

    from cl_sweep.training.train import structure_of, train_jobs

    def cfg(*o):
        return OmegaConf.to_container(compose(["activation=relu", "optimizer=sgd", "optimizer.learning_rate=0.05",
                                               "benchmark.limit_per_task=256", "n_seeds=1", "progress=false", *o]), resolve=True)

    jobs = [cfg(f"strategy={l2_anchor}", f"strategy.lambda={lam}") for lam in (0.0, 50.0)]
    assert len({structure_of(c) for c in jobs}) == 1  # lambda is traced: one program for both
    together = train_jobs(jobs, [[]] * 2)
    alone = [train_jobs([c], [[]])[0] for c in jobs]
    plain = train_jobs([cfg()], [[]])[0]
    assert [r["accuracy_matrix"] for r in together] == [r["accuracy_matrix"] for r in alone]
    assert together[0]["final_accuracy"] == pytest.approx(plain["final_accuracy"], abs=0.005)  # lambda 0: no pull
    assert together[1]["accuracy_matrix"] != together[0]["accuracy_matrix"]  # a strong pull changes training
    assert together[1]["hyperparameters"]["strategy.lambda"] == 50.0 and together[1]["hyperparameters"]["strategy.name"] == l2_anchor
