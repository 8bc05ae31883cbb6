"""Hidden-layer activations as pure functions ``(x, *, **hyperparameters) -> y``, registered by name
through the public API (``cl_sweep.register_activation``, cl_sweep.components.registry): the keyword-only
parameters, their annotations and defaults are each activation's config schema.

``x`` holds pre-activations with the hidden units on the last axis; every statistic is per
example over those units (the paper's convention). Hyperparameters are either *traced* (may
differ between members of a population trained in one program, passed as arrays) or *static*
(change the program's shapes, like LWTA's number of groups).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cl_sweep.training.ops import kth_largest
from cl_sweep.components.registry import ACTIVATIONS, Component, between, divides, finite, positive, register_activation

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]

Activation = Component  # a registered activation: .fn, .traced, .static (cl_sweep.components.registry)


def get_activation(name: str) -> Component:
    """Returns the registered activation; an unknown name raises ValueError listing the allowed ones."""
    return ACTIVATIONS.lookup(name)


def _threshold(x: jax.Array, z_k: jax.Array) -> jax.Array:
    """mean + z_k * std of each example's pre-activations (population std, as jnp.std)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    std = jnp.std(x, axis=-1, keepdims=True)
    return mean + z_k * std


@register_activation("ash", checks={"alpha": positive, "z_k": finite}, label="ASH")
def ash(x: jax.Array, *, alpha: float = 3.0, z_k: float = 2.3) -> jax.Array:
    """Adaptive SwisH: ``x * sigmoid(alpha * (x - mu - z_k * sigma))``.

    References: Lee et al. 2022, "Stochastic adaptive activation function".
    """
    return x * jax.nn.sigmoid(alpha * (x - _threshold(x, z_k)))


@register_activation("hard_ash", checks={"alpha": positive, "z_k": finite, "beta": positive}, label="Hard ASH")
def hard_ash(x: jax.Array, *, alpha: float = 3.0, z_k: float = 2.3, beta: float = 2.0) -> jax.Array:
    """Hard ASH: ``clip(x, 0, beta) * hard_sigmoid(alpha * (x - mu - z_k * sigma))``.

    With the defaults most units are saturated at 0, so most gradients are exactly zero.
    References: Keskinen 2024, "Hard ASH: Sparsity and the right optimizer make a continual learner", A.2.
    """
    return jnp.clip(x, 0.0, beta) * jax.nn.hard_sigmoid(alpha * (x - _threshold(x, z_k)))


@register_activation("topk_subtract", checks={"k": between(1, "model.hidden_size")}, label="Top-K subtract", sparse_gradient=True)
def topk_subtract(x: jax.Array, *, k: int = 64) -> jax.Array:
    """Top-K subtract: ``clip(x - v_k, 0, 2)`` with v_k the k-th largest pre-activation of the example.

    References: Bricken et al. 2023, "Sparse distributed memory is a continual learner".
    """
    return jnp.clip(x - kth_largest(x, k), 0.0, 2.0)


@register_activation("topk_mask", checks={"k": between(1, "model.hidden_size")}, label="Top-K mask", sparse_gradient=True)
def topk_mask(x: jax.Array, *, k: int = 64) -> jax.Array:
    """Top-K mask (k-WTA): keep ``x`` where ``x >= v_k``, else 0.

    References: Makhzani & Frey 2014, "k-sparse autoencoders".
    """
    return jnp.where(x >= kth_largest(x, k), x, 0.0)


@register_activation("lwta", static=("groups",), checks={"groups": divides("model.hidden_size")}, label="LWTA", sparse_gradient=True)
def lwta(x: jax.Array, *, groups: int = 50) -> jax.Array:
    """Local winner-take-all: the units form ``groups`` blocks of consecutive units; only each block's maximum keeps its value.

    References: Srivastava et al. 2013, "Compete to compute".
    """
    shape = x.shape
    blocks = x.reshape(*shape[:-1], groups, shape[-1] // groups)
    winner = jax.nn.one_hot(jnp.argmax(blocks, axis=-1), blocks.shape[-1], dtype=x.dtype)
    return (winner * blocks).reshape(shape)


@register_activation("relu", label="ReLU")
def relu(x: jax.Array) -> jax.Array:
    """ReLU."""
    return jax.nn.relu(x)


@register_activation("swish", label="Swish")
def swish(x: jax.Array) -> jax.Array:
    """Swish / SiLU: ``x * sigmoid(x)``."""
    return jax.nn.swish(x)


@register_activation("sigmoid", label="Sigmoid")
def sigmoid(x: jax.Array) -> jax.Array:
    """Logistic sigmoid."""
    return jax.nn.sigmoid(x)


@register_activation("hard_sigmoid", label="Hard Sigmoid")
def hard_sigmoid(x: jax.Array) -> jax.Array:
    """Hard sigmoid ``relu6(x + 3) / 6`` (jax.nn.hard_sigmoid)."""
    return jax.nn.hard_sigmoid(x)


@register_activation("elephant", checks={"a": positive, "d": positive}, label="Elephant")
def elephant(x: jax.Array, *, a: float = 0.16, d: float = 4.0) -> jax.Array:
    """Elephant: ``1 / (1 + |x / a|^d)``.

    References: Lan & Mahmood 2023, "Elephant neural networks: born to be a continual learner".
    """
    return 1.0 / (1.0 + jnp.abs(x / a) ** d)
