"""Regularisers that use task boundaries: a quadratic penalty in the loss, and an importance update after each task.

Each strategy is pure functions over parameter pytrees, so it runs per member inside the
vectorised engine (``vmap`` over seeds × grid points, no per-seed Python loop):

- ``init_state(name, params)``: the state before the first task (no penalty);
- ``penalty(name, state, params, hp)``: added to the training loss;
- ``consolidate(name, state, params, importance, hp)``: the state after a task, from that task's
  importance estimate (`empirical_fisher` or `mas_importance`).

References: Kirkpatrick et al. 2017 (EWC); Schwarz et al. 2018 (online EWC, in "Progress &
compress"); Aljundi et al. 2018 (MAS, "Memory aware synapses").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

tree_map = jax.tree_util.tree_map


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: its traced hyperparameters, static ones, and which importance it uses."""

    name: str
    traced: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    importance: str | None = None  # "fisher" or "mas"


STRATEGIES: dict[str, Strategy] = {}


def register(strategy: Strategy) -> None:
    """Adds a strategy to the registry; a duplicate name is refused."""
    if strategy.name in STRATEGIES:
        raise ValueError(f"strategy {strategy.name!r} is already registered")
    STRATEGIES[strategy.name] = strategy


def get_strategy(name: str) -> Strategy:
    """Returns the registered strategy; an unknown name raises ValueError listing the allowed ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}") from None


register(Strategy("none"))
# EWC keeps one anchor per task: sum_t F_t (theta - theta_t)^2 = A theta^2 - 2 B theta + C with
# A = sum_t F_t, B = sum_t F_t theta_t, C = sum_t F_t theta_t^2, so memory stays O(parameters).
register(Strategy("ewc", traced=("lambda",), static=("samples",), importance="fisher"))
register(Strategy("online_ewc", traced=("lambda", "gamma"), static=("samples",), importance="fisher"))
register(Strategy("mas", traced=("lambda",), static=("samples",), importance="mas"))


def _zeros(params):
    return tree_map(jnp.zeros_like, params)


def _sum(tree) -> jax.Array:
    return sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def init_state(name: str, params) -> dict:
    """The state before any task: zero importance (so a zero penalty)."""
    if name == "none":
        return {}
    if name == "ewc":
        return {"a": _zeros(params), "b": _zeros(params), "c": jnp.zeros((), jnp.float32)}
    return {"importance": _zeros(params), "anchor": tree_map(jnp.asarray, params)}


def penalty(name: str, state: dict, params, hp) -> jax.Array:
    """``lambda / 2 * sum importance * (theta - anchor)^2`` (summed over anchors for EWC)."""
    if name == "none":
        return jnp.zeros((), jnp.float32)
    lam = hp["lambda"]
    if name == "ewc":
        quad = _sum(tree_map(lambda a, b, p: a * p * p - 2.0 * b * p, state["a"], state["b"], params)) + state["c"]
        return 0.5 * lam * quad
    return 0.5 * lam * _sum(tree_map(lambda f, p, q: f * jnp.square(p - q), state["importance"], params, state["anchor"]))


def consolidate(name: str, state: dict, params, importance, hp) -> dict:
    """The state after a task whose end point is ``params`` and whose importance estimate is ``importance``."""
    if name == "none":
        return state
    if name == "ewc":
        return {
            "a": tree_map(jnp.add, state["a"], importance),
            "b": tree_map(lambda b, f, p: b + f * p, state["b"], importance, params),
            "c": state["c"] + _sum(tree_map(lambda f, p: f * p * p, importance, params)),
        }
    if name == "online_ewc":
        merged = tree_map(lambda f, g: hp["gamma"] * f + g, state["importance"], importance)
    else:  # mas accumulates importance over tasks
        merged = tree_map(jnp.add, state["importance"], importance)
    return {"importance": merged, "anchor": params}


def _per_example_mean(fn: Callable, params, examples, chunk: int):
    """Mean over examples of ``fn(params, example)`` (a pytree like params), ``chunk`` examples per vmap.

    ``examples`` is an array or a pytree of arrays sharing the leading (example) axis.
    """
    n = jax.tree_util.tree_leaves(examples)[0].shape[0]
    chunk = max(1, min(chunk, n))
    usable = (n // chunk) * chunk  # the remainder (< chunk examples) is dropped: n is a sample size anyway
    batches = tree_map(lambda a: a[:usable].reshape(usable // chunk, chunk, *a.shape[1:]), examples)

    def body(total, batch):
        values = jax.vmap(lambda e: fn(params, e))(batch)
        return tree_map(lambda t, v: t + jnp.sum(v, axis=0), total, values), None

    total, _ = lax.scan(body, _zeros(params), batches)
    return tree_map(lambda t: t / usable, total)


def empirical_fisher(log_likelihood: Callable, params, xs, ys, *, chunk: int = 16):
    """Diagonal empirical Fisher: the mean over examples of the squared gradient of ``log p(y_i | x_i)``.

    Args:
        log_likelihood: ``(params, x, y) -> scalar`` for one example.
        params: where to take the gradients.
        xs, ys: the task's examples (e.g. a sample of its training set) and their labels.
    """

    def squared_grad(p, example):
        x, y = example
        return tree_map(jnp.square, jax.grad(log_likelihood)(p, x, y))

    return _per_example_mean(squared_grad, params, (xs, ys), chunk)


def mas_importance(outputs: Callable, params, xs, *, chunk: int = 16):
    """MAS importance: the mean over examples of ``|d ||f(x_i)||^2 / d theta|`` (no labels needed).

    Args:
        outputs: ``(params, x) -> network output`` for one example.
    """

    def abs_grad(p, x):
        return tree_map(jnp.abs, jax.grad(lambda q: jnp.sum(jnp.square(outputs(q, x))))(p))

    return _per_example_mean(abs_grad, params, xs, chunk)
