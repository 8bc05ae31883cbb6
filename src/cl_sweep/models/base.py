"""The model protocol: what the engine needs of a network, as pure functions of one member.

A registered model (``cl_sweep.register_model``) is a function of its hyperparameters that
returns a `Model`, a ``flax.linen.Module`` or a ``flax.nnx.Module``; `build` turns each into a
`Model`. The engine vectorises ``init`` over the population (one key per member), trains what it
returns with the chosen optimizer, strategy and launcher, and calls the optional parts at their
places in a step:

    x = preprocess(images)                         # uint8 pixels -> the network's inputs
    logits, hidden = apply(params, x, activation, aux)
    params = optimizer step (after clip_by_global_norm(grad_clip_norm), then the update_clip)
    params = project(params)                       # e.g. SDMLP's non-negative unit-norm weights
    aux = aux_update(aux, hidden, mask)            # untrained per-member state (SDMLP's counters)

``activation`` is the `activation` group's function with this member's hyperparameters bound;
``hidden`` is the activity whose share of non-zero units the result records (``active_fraction``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

Params = Any  # a pytree of arrays
Activation = Callable[[jax.Array], jax.Array]

# torchvision's MNIST statistics, as the reference: x/255, then (x - mean) / std.
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081


def standard_preprocess(images_uint8: jax.Array) -> jax.Array:
    """uint8 pixels [..., input size] -> ``(x / 255 - 0.1307) / 0.3081`` in float32 (the paper's)."""
    return (images_uint8.astype(jnp.float32) * (1.0 / 255.0) - PIXEL_MEAN) * (1.0 / PIXEL_STD)


@dataclass(frozen=True)
class FusedInputLayer:
    """A model whose first operation is ``weight_norm_matmul(x, params[param])`` may have that layer
    updated by the fused CPU kernel (cl_sweep.training.kernels); ``head(pre_activations, other_params,
    activation) -> logits`` is the rest of the network. ``width``: the layer's output units."""

    param: str
    width: int
    head: Callable[[jax.Array, Mapping[str, jax.Array], Activation], jax.Array]


@dataclass(frozen=True)
class Model:
    """A network as the engine trains it (see the module docstring for where each part runs)."""

    init: Callable[[jax.Array], Params] | None  # one member's parameters from its PRNG key
    apply: Callable[[Params, jax.Array, Activation, Any], tuple[jax.Array, jax.Array]] | None
    preprocess: Callable[[jax.Array], jax.Array] = standard_preprocess
    project: Callable[[Params], Params] | None = None
    aux_init: Callable[[], Any] | None = None  # one member's untrained state, e.g. counters
    aux_update: Callable[[Any, jax.Array, jax.Array], Any] | None = None
    grad_clip_norm: float | None = None  # clip of the gradients' global norm before the optimizer
    update_clip: float | None = None  # elementwise clip of the optimizer's update (the paper's)
    fused: FusedInputLayer | None = None
    # A model trained by its own rule, not by gradients (FlyModel): called as
    # trainer(seeds, data, split, **schedule) -> engine.PopulationResult; init/apply are then unused.
    # ``schedule`` may hold ``on_task_end``, which the trainer passes on to engine.run_tasks.
    trainer: Callable[..., Any] | None = None


def _recording(activation: Activation) -> tuple[Activation, list]:
    """The activation, and the list its outputs are appended to (the hidden activity of a module)."""
    seen: list = []

    def act(z):
        y = activation(z)
        seen.append(y)
        return y

    return act, seen


def _outputs(out: Any, seen: list) -> tuple[jax.Array, jax.Array]:
    """(logits, hidden) from a module's return value and the activations it called."""
    if isinstance(out, tuple) and len(out) == 2:
        return out
    if not seen:  # the module never called the activation: no hidden activity to measure
        return out, jnp.zeros((out.shape[0], 0), out.dtype)
    flat = [y.reshape(y.shape[0], -1) for y in seen]
    return out, flat[0] if len(flat) == 1 else jnp.concatenate(flat, axis=-1)


def _identity(z):
    return z


def from_linen(module: Any, input_size: int, name: str) -> Model:
    """A `Model` from a flax.linen Module whose ``__call__(x, activation)`` returns logits (or (logits, hidden))."""

    def init(key):
        variables = module.init(key, jnp.zeros((1, input_size), jnp.float32), _identity)
        extra = sorted(set(variables) - {"params"})
        if extra:
            raise TypeError(
                f"model {name!r}: the flax module has variable collections {extra} besides 'params'; "
                f"cl_sweep trains 'params' only (no batch statistics or other mutable state)"
            )
        return variables["params"]

    def apply(params, x, activation, aux):
        act, seen = _recording(activation)
        return _outputs(module.apply({"params": params}, x, act), seen)

    return Model(init=init, apply=apply)


def from_nnx(make: Callable[[Any], Any], name: str) -> Model:
    """A `Model` from a function ``rngs -> flax.nnx.Module`` whose ``__call__(x, activation)`` returns logits."""
    from flax import nnx

    abstract = nnx.eval_shape(lambda: make(nnx.Rngs(0)))
    graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
    if jax.tree_util.tree_leaves(rest):
        raise TypeError(
            f"model {name!r}: the nnx module holds state other than nnx.Param ({type(abstract).__name__}: "
            f"{sorted(set(map(str, nnx.to_flat_state(rest).keys())))[:4]}...); cl_sweep trains nnx.Param only "
            f"(no batch statistics, no RNG streams inside the module)"
        )

    def init(key):
        _, params, _ = nnx.split(make(nnx.Rngs(key)), nnx.Param, ...)
        return params

    def apply(params, x, activation, aux):
        module = nnx.merge(graphdef, params)
        act, seen = _recording(activation)
        return _outputs(module(x, act), seen)

    return Model(init=init, apply=apply)


def build(component, hyperparameters: Mapping[str, Any], *, input_size: int, num_classes: int,
          epochs_per_task: int | None = None) -> Model:
    """The `Model` a registered model component gives for these hyperparameters and data shapes."""
    facts = {"input_size": input_size, "num_classes": num_classes, "epochs_per_task": epochs_per_task or 1}
    kwargs = {**hyperparameters, **{k: facts[k] for k in component.injected if k in facts}}
    if "rngs" in component.injected:  # a flax.nnx module is built from its random streams
        return from_nnx(lambda rngs: component.fn(**kwargs, rngs=rngs), component.name)
    made = component.fn(**kwargs)
    if isinstance(made, Model):
        return made
    if _is_linen(made):
        return from_linen(made, input_size, component.name)
    raise TypeError(
        f"model {component.name!r}: {getattr(component.fn, '__qualname__', component.fn)} returned "
        f"{type(made).__name__}; a registered model returns a flax.linen.Module, a cl_sweep.models.Model, "
        f"or (taking an `rngs` keyword argument) a flax.nnx.Module"
    )


def _is_linen(obj: Any) -> bool:
    try:
        from flax import linen
    except ImportError:  # pragma: no cover - flax is a dependency
        return False
    return isinstance(obj, linen.Module)


@functools.lru_cache(maxsize=64)
def build_cached(name: str, static: tuple, input_size: int, num_classes: int) -> Model:
    """`build` for a model by registered name and its static (key, value) pairs: one per structure."""
    from cl_sweep.components.registry import MODELS

    items = dict(static)
    epochs = items.pop("epochs_per_task", None)
    return build(MODELS.lookup(name), items, input_size=input_size, num_classes=num_classes, epochs_per_task=epochs)
