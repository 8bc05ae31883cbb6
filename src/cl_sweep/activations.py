"""Hidden-layer activations as pure functions ``(x, **hyperparameters) -> y``, registered by name.

``x`` holds pre-activations with the hidden units on the last axis; every statistic is per
example over those units (the paper's convention). Hyperparameters are either *traced* (may
differ between members of a population trained in one program, passed as arrays) or *static*
(change the program's shapes, like LWTA's number of groups).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp

from cl_sweep.ops import kth_largest


@dataclass(frozen=True)
class Activation:
    """A registered activation: its function and which hyperparameters are traced or static."""

    name: str
    fn: Callable[..., jax.Array]
    traced: tuple[str, ...] = ()
    static: tuple[str, ...] = ()


ACTIVATIONS: dict[str, Activation] = {}


def register(name: str, *, traced: tuple[str, ...] = (), static: tuple[str, ...] = ()):
    """Decorator adding an activation to the registry; a duplicate name is refused."""

    def deco(fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
        if name in ACTIVATIONS:
            raise ValueError(f"activation {name!r} is already registered")
        ACTIVATIONS[name] = Activation(name, fn, traced, static)
        return fn

    return deco


def get_activation(name: str) -> Activation:
    """Returns the registered activation; an unknown name raises ValueError listing the allowed ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}") from None


def _threshold(x: jax.Array, z_k: jax.Array) -> jax.Array:
    """mean + z_k * std of each example's pre-activations (population std, as jnp.std)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    std = jnp.std(x, axis=-1, keepdims=True)
    return mean + z_k * std


@register("ash", traced=("alpha", "z_k"))
def ash(x: jax.Array, *, alpha, z_k) -> jax.Array:
    """Adaptive SwisH: ``x * sigmoid(alpha * (x - mu - z_k * sigma))``.

    References: Lee et al. 2022, "Stochastic adaptive activation function".
    """
    return x * jax.nn.sigmoid(alpha * (x - _threshold(x, z_k)))


@register("hard_ash", traced=("alpha", "z_k", "beta"))
def hard_ash(x: jax.Array, *, alpha, z_k, beta) -> jax.Array:
    """Hard ASH: ``clip(x, 0, beta) * hard_sigmoid(alpha * (x - mu - z_k * sigma))``.

    With the defaults most units are saturated at 0, so most gradients are exactly zero.
    References: Keskinen 2024, "Hard ASH: Sparsity and the right optimizer make a continual learner", A.2.
    """
    return jnp.clip(x, 0.0, beta) * jax.nn.hard_sigmoid(alpha * (x - _threshold(x, z_k)))


@register("topk_subtract", traced=("k",))
def topk_subtract(x: jax.Array, *, k) -> jax.Array:
    """Top-K subtract: ``clip(x - v_k, 0, 2)`` with v_k the k-th largest pre-activation of the example.

    References: Bricken et al. 2023, "Sparse distributed memory is a continual learner".
    """
    return jnp.clip(x - kth_largest(x, k), 0.0, 2.0)


@register("topk_mask", traced=("k",))
def topk_mask(x: jax.Array, *, k) -> jax.Array:
    """Top-K mask (k-WTA): keep ``x`` where ``x >= v_k``, else 0.

    References: Makhzani & Frey 2014, "k-sparse autoencoders".
    """
    return jnp.where(x >= kth_largest(x, k), x, 0.0)


@register("lwta", static=("groups",))
def lwta(x: jax.Array, *, groups: int) -> jax.Array:
    """Local winner-take-all: the units form ``groups`` blocks of consecutive units; only each block's maximum keeps its value.

    References: Srivastava et al. 2013, "Compete to compute".
    """
    shape = x.shape
    blocks = x.reshape(*shape[:-1], groups, shape[-1] // groups)
    winner = jax.nn.one_hot(jnp.argmax(blocks, axis=-1), blocks.shape[-1], dtype=x.dtype)
    return (winner * blocks).reshape(shape)


@register("relu")
def relu(x: jax.Array) -> jax.Array:
    """ReLU."""
    return jax.nn.relu(x)


@register("swish")
def swish(x: jax.Array) -> jax.Array:
    """Swish / SiLU: ``x * sigmoid(x)``."""
    return jax.nn.swish(x)


@register("sigmoid")
def sigmoid(x: jax.Array) -> jax.Array:
    """Logistic sigmoid."""
    return jax.nn.sigmoid(x)


@register("hard_sigmoid")
def hard_sigmoid(x: jax.Array) -> jax.Array:
    """Hard sigmoid ``relu6(x + 3) / 6`` (jax.nn.hard_sigmoid)."""
    return jax.nn.hard_sigmoid(x)


@register("elephant", traced=("a", "d"))
def elephant(x: jax.Array, *, a, d) -> jax.Array:
    """Elephant: ``1 / (1 + |x / a|^d)``.

    References: Lan & Mahmood 2023, "Elephant neural networks: born to be a continual learner".
    """
    return 1.0 / (1.0 + jnp.abs(x / a) ** d)
