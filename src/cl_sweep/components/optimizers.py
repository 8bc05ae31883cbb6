"""Optimizers as optax factories, registered by name, plus the paper's elementwise update clip.

Every factory takes its hyperparameters as keyword arguments that may be traced arrays, so one
compiled program trains a population whose members use different learning rates, decays or
momenta.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from cl_sweep.components.registry import (
    OPTIMIZERS, Component, half_open_unit, nonnegative, positive, positive_int, register_optimizer, unit_interval,
)

__all__ = ["OPTIMIZERS", "Optimizer", "get_optimizer", "with_update_clip"]

Optimizer = Component  # a registered optimizer: .fn (= .factory), .traced (= .hyperparameters), .static


def get_optimizer(name: str) -> Component:
    """Returns the registered optimizer; an unknown name raises ValueError listing the allowed ones."""
    return OPTIMIZERS.lookup(name)


@register_optimizer("adagrad", checks={"learning_rate": positive, "initial_accumulator_value": nonnegative}, label="Adagrad")
def adagrad(*, learning_rate: float = 2e-4, initial_accumulator_value: float = 1e-6) -> optax.GradientTransformation:
    """Adagrad; a tiny initial accumulator gives very large first steps (paper A.6).

    References: Duchi et al. 2011, "Adaptive subgradient methods for online learning".
    """
    return optax.adagrad(learning_rate, initial_accumulator_value=initial_accumulator_value)


@register_optimizer("rmsprop", checks={"learning_rate": positive, "decay": unit_interval}, label="RMSprop")
def rmsprop(*, learning_rate: float = 5.5e-6, decay: float = 0.9993) -> optax.GradientTransformation:
    """RMSprop (no bias correction, no momentum).

    References: Tieleman & Hinton 2012, Lecture 6.5.
    """
    return optax.rmsprop(learning_rate, decay=decay)


@register_optimizer("adam", static=("bias_correction",), checks={"learning_rate": positive, "b1": unit_interval, "b2": unit_interval}, label="Adam")
def adam(*, learning_rate: float = 1e-5, b1: float = 0.98, b2: float = 0.9995, bias_correction: bool = True) -> optax.GradientTransformation:
    """Adam; with ``bias_correction=False`` the moments are used as they are (paper A.8).

    Without bias correction the early steps are much larger (the second moment starts near 0),
    which the paper found raises Hard ASH + Adam from 71.6 to 76.7 on Split-MNIST.
    References: Kingma & Ba 2014, "Adam: A method for stochastic optimization".
    """
    if bias_correction:
        return optax.adam(learning_rate, b1=b1, b2=b2)
    return optax.chain(_scale_by_adam_without_bias_correction(b1, b2), optax.scale_by_learning_rate(learning_rate))


def _scale_by_adam_without_bias_correction(b1, b2, eps: float = 1e-8) -> optax.GradientTransformation:
    """``mu / (sqrt(nu) + eps)`` with raw exponential moving averages (optax.scale_by_adam's state)."""

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros)

    def update(updates, state, params=None):
        del params
        mu = jax.tree_util.tree_map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = jax.tree_util.tree_map(lambda g, v: (1 - b2) * jnp.square(g) + b2 * v, updates, state.nu)
        out = jax.tree_util.tree_map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return out, optax.ScaleByAdamState(count=optax.safe_increment(state.count), mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


@register_optimizer("sgd", checks={"learning_rate": positive}, label="SGD")
def sgd(*, learning_rate: float = 4e-4) -> optax.GradientTransformation:
    """Plain SGD."""
    return optax.sgd(learning_rate)


@register_optimizer("sgd_exp_decay", static=("transition_steps", "staircase"),
                    checks={"learning_rate": positive, "decay_rate": half_open_unit, "transition_steps": positive_int})
def sgd_exp_decay(*, learning_rate: float = 1e-2, decay_rate: float = 0.7, transition_steps: int = 200, staircase: bool = True) -> optax.GradientTransformation:
    """SGD whose learning rate decays as ``lr * decay_rate ** (step / transition_steps)`` (paper A.9).

    With ``staircase`` the exponent is floored: the rate drops by ``decay_rate`` every
    ``transition_steps`` steps (the paper: 0.7 every 200 steps). Same schedule as
    optax.exponential_decay, written out so ``learning_rate`` and ``decay_rate`` may be traced.
    """

    def schedule(count):
        p = count / transition_steps
        return learning_rate * decay_rate ** (jnp.floor(p) if staircase else p)

    return optax.sgd(schedule)


@register_optimizer("sgdm", checks={"learning_rate": positive, "momentum": unit_interval}, label="SGDM")
def sgdm(*, learning_rate: float = 1e-5, momentum: float = 0.994) -> optax.GradientTransformation:
    """SGD with (heavy-ball) momentum."""
    return optax.sgd(learning_rate, momentum=momentum)


def with_update_clip(tx: optax.GradientTransformation, update_clip: float | None) -> optax.GradientTransformation:
    """Clips the transformed update elementwise to ``[-update_clip, update_clip]`` (the paper's "gradient clip").

    The clip acts on the optimizer's *output*, after the learning rate, so it bounds every
    parameter's change per step; ``None`` leaves ``tx`` unchanged.
    """
    if update_clip is None:
        return tx
    return optax.chain(tx, optax.clip(update_clip))
