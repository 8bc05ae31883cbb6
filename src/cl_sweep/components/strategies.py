"""Regularisers that use task boundaries: a quadratic penalty in the loss, and an importance update after each task.

A strategy is one function registered with ``cl_sweep.register_strategy``: its keyword-only
parameters are its hyperparameters (traced per member unless static; ``lambda_`` is the config
key ``lambda``), and it returns a `Regulariser` of pure functions over parameter pytrees, so it
runs per member inside the vectorised engine (``vmap`` over seeds × grid points):

- ``init(params)``: the state before the first task (no penalty);
- ``penalty(state, params)``: added to the training loss;
- ``consolidate(state, params, importance)``: the state after a task, from that task's
  importance estimate, ``importance="fisher"`` (`empirical_fisher`), ``"mas"`` (`mas_importance`)
  or None (no estimate: ``importance`` is then None).

A strategy returning None (``none``) leaves the program exactly the plain one.

References: Kirkpatrick et al. 2017 (EWC); Schwarz et al. 2018 (online EWC, in "Progress &
compress"); Aljundi et al. 2018 (MAS, "Memory aware synapses").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from cl_sweep.components.registry import STRATEGIES, Component, nonnegative, positive_int, register_strategy

tree_map = jax.tree_util.tree_map

__all__ = ["Regulariser", "STRATEGIES", "get_strategy", "regulariser", "init_state", "penalty", "consolidate",
           "empirical_fisher", "mas_importance"]


@dataclass(frozen=True)
class Regulariser:
    """What a strategy does at its three places (see the module docstring)."""

    init: Callable[[Any], Any]
    penalty: Callable[[Any, Any], jax.Array]
    consolidate: Callable[[Any, Any, Any], Any]
    importance: str | None = "fisher"  # the estimate consolidate receives: "fisher", "mas", or None (none)


def get_strategy(name: str) -> Component:
    """Returns the registered strategy; an unknown name raises ValueError listing the allowed ones."""
    return STRATEGIES.lookup(name)


def regulariser(name: str, hp: Mapping[str, Any] | None = None) -> Regulariser | None:
    """The strategy's `Regulariser` for these hyperparameters (defaults for the ones not given;
    keys the strategy does not have are ignored)."""
    strat = get_strategy(name)
    given = {k: v for k, v in (hp or {}).items() if k in strat.keys}
    return strat.call(**{**strat.defaults, **given})


def init_state(name: str, params, hp: Mapping[str, Any] | None = None):
    """The state before any task: zero importance (so a zero penalty); {} without a regulariser."""
    reg = regulariser(name, hp)
    return {} if reg is None else reg.init(params)


def penalty(name: str, state, params, hp: Mapping[str, Any] | None = None) -> jax.Array:
    """``lambda / 2 * sum importance * (theta - anchor)^2`` (summed over anchors for EWC); 0 without a regulariser."""
    reg = regulariser(name, hp)
    return jnp.zeros((), jnp.float32) if reg is None else reg.penalty(state, params)


def consolidate(name: str, state, params, importance, hp: Mapping[str, Any] | None = None):
    """The state after a task whose end point is ``params`` and whose importance estimate is ``importance``."""
    reg = regulariser(name, hp)
    return state if reg is None else reg.consolidate(state, params, importance)


def _zeros(params):
    return tree_map(jnp.zeros_like, params)


def _sum(tree) -> jax.Array:
    return sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def _gamma(v: Any, cfg: Mapping) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0
    return None if ok else "it must lie in [0, 1]"


def _samples(v: Any, cfg: Mapping) -> str | None:
    return None if positive_int(v, cfg) is None else "it must be a positive integer (examples per task for the importance)"


@register_strategy("none", label="none")
def none():
    """No regulariser (the paper's setting): the program is exactly the plain one."""
    return None


def _anchored(lambda_, merge: Callable, importance: str) -> Regulariser:
    """Online EWC and MAS: one importance and one anchor (the last task's end point)."""

    def consolidate_(state, params, imp):
        return {"importance": merge(state["importance"], imp), "anchor": params}

    return Regulariser(
        init=lambda params: {"importance": _zeros(params), "anchor": tree_map(jnp.asarray, params)},
        penalty=lambda state, params: 0.5 * lambda_ * _sum(
            tree_map(lambda f, p, q: f * jnp.square(p - q), state["importance"], params, state["anchor"])),
        consolidate=consolidate_,
        importance=importance,
    )


@register_strategy("ewc", static=("samples",), checks={"lambda": nonnegative, "samples": _samples}, label="EWC")
def ewc(*, lambda_: float = 100.0, samples: int = 256) -> Regulariser:
    """EWC (Kirkpatrick et al. 2017): diagonal empirical Fisher, one anchor per task, strength ``lambda``.

    sum_t F_t (theta - theta_t)^2 = A theta^2 - 2 B theta + C with A = sum_t F_t,
    B = sum_t F_t theta_t, C = sum_t F_t theta_t^2, so memory stays O(parameters).
    """

    def penalty_(state, params):
        quad = _sum(tree_map(lambda a, b, p: a * p * p - 2.0 * b * p, state["a"], state["b"], params)) + state["c"]
        return 0.5 * lambda_ * quad

    def consolidate_(state, params, imp):
        return {
            "a": tree_map(jnp.add, state["a"], imp),
            "b": tree_map(lambda b, f, p: b + f * p, state["b"], imp, params),
            "c": state["c"] + _sum(tree_map(lambda f, p: f * p * p, imp, params)),
        }

    return Regulariser(
        init=lambda params: {"a": _zeros(params), "b": _zeros(params), "c": jnp.zeros((), jnp.float32)},
        penalty=penalty_, consolidate=consolidate_, importance="fisher",
    )


@register_strategy("online_ewc", static=("samples",), checks={"lambda": nonnegative, "gamma": _gamma, "samples": _samples},
                   label="online EWC")
def online_ewc(*, lambda_: float = 100.0, gamma: float = 0.9, samples: int = 256) -> Regulariser:
    """Online EWC (Schwarz et al. 2018): one running Fisher, decayed by ``gamma`` per task."""
    return _anchored(lambda_, lambda f, g: tree_map(lambda a, b: gamma * a + b, f, g), "fisher")


@register_strategy("mas", static=("samples",), checks={"lambda": nonnegative, "samples": _samples}, label="MAS")
def mas(*, lambda_: float = 1.0, samples: int = 256) -> Regulariser:
    """MAS (Aljundi et al. 2018): importance = |grad of the squared L2 norm of the output|, accumulated over tasks."""
    return _anchored(lambda_, lambda f, g: tree_map(jnp.add, f, g), "mas")


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
