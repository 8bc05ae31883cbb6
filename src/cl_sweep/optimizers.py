"""Optimizers as optax factories, registered by name, plus the paper's elementwise update clip.

Every factory takes its hyperparameters as keyword arguments that may be traced arrays, so one
compiled program trains a population whose members use different learning rates, decays or
momenta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import optax


@dataclass(frozen=True)
class Optimizer:
    """A registered optimizer factory and the names of its (traced) hyperparameters."""

    name: str
    factory: Callable[..., optax.GradientTransformation]
    hyperparameters: tuple[str, ...]


OPTIMIZERS: dict[str, Optimizer] = {}


def register(name: str, hyperparameters: tuple[str, ...]):
    """Decorator adding an optimizer factory to the registry; a duplicate name is refused."""

    def deco(factory):
        if name in OPTIMIZERS:
            raise ValueError(f"optimizer {name!r} is already registered")
        OPTIMIZERS[name] = Optimizer(name, factory, hyperparameters)
        return factory

    return deco


def get_optimizer(name: str) -> Optimizer:
    """Returns the registered optimizer; an unknown name raises ValueError listing the allowed ones."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}") from None


@register("adagrad", ("learning_rate", "initial_accumulator_value"))
def adagrad(*, learning_rate, initial_accumulator_value) -> optax.GradientTransformation:
    """Adagrad; a tiny initial accumulator gives very large first steps (paper A.6).

    References: Duchi et al. 2011, "Adaptive subgradient methods for online learning".
    """
    return optax.adagrad(learning_rate, initial_accumulator_value=initial_accumulator_value)


@register("rmsprop", ("learning_rate", "decay"))
def rmsprop(*, learning_rate, decay) -> optax.GradientTransformation:
    """RMSprop (no bias correction, no momentum).

    References: Tieleman & Hinton 2012, Lecture 6.5.
    """
    return optax.rmsprop(learning_rate, decay=decay)


@register("adam", ("learning_rate", "b1", "b2"))
def adam(*, learning_rate, b1, b2) -> optax.GradientTransformation:
    """Adam with bias correction.

    References: Kingma & Ba 2014, "Adam: A method for stochastic optimization".
    """
    return optax.adam(learning_rate, b1=b1, b2=b2)


@register("sgd", ("learning_rate",))
def sgd(*, learning_rate) -> optax.GradientTransformation:
    """Plain SGD."""
    return optax.sgd(learning_rate)


@register("sgdm", ("learning_rate", "momentum"))
def sgdm(*, learning_rate, momentum) -> optax.GradientTransformation:
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
