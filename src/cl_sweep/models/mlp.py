"""``model=mlp``: the paper's MLP, 784 → 1000 → 10, no biases, Kaiming init, centred weight norm
per layer; deeper with a list of widths (``model.hidden_size=[1000,1000]``).

Parameters are a plain dict ``{"w1": [784, hidden], "w2": [hidden, 10]}`` (``w1 … w<L+1>`` for L
hidden layers) laid out ``[in, out]`` so the matmuls read contiguous rows. Weight norm (paper
A.4) re-parameterises a layer: each output unit's incoming weight vector is centred and scaled
to unit L2 norm, gain fixed at 1. The activation follows every hidden layer.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from cl_sweep.models.base import PIXEL_MEAN, PIXEL_STD, FusedInputLayer, Model, standard_preprocess
from cl_sweep.training.ops import weight_norm, weight_norm_matmul
from cl_sweep.components.registry import _ints, register_model

__all__ = ["mlp", "init_params", "preprocess", "dense", "hidden", "forward", "effective_weights", "count_params",
           "INPUT_SIZE", "NUM_CLASSES", "PIXEL_MEAN", "PIXEL_STD"]

INPUT_SIZE = 784
NUM_CLASSES = 10
preprocess = standard_preprocess


def _widths(hidden_size: int | Sequence[int]) -> tuple[int, ...]:
    return tuple(hidden_size) if isinstance(hidden_size, Sequence) else (hidden_size,)


def init_params(
    key: jax.Array, hidden_size: int | Sequence[int], num_classes: int = NUM_CLASSES, input_size: int = INPUT_SIZE
) -> dict[str, jax.Array]:
    """Kaiming-normal init, N(0, 2 / fan_in), for every layer (paper A.3)."""
    sizes = (input_size, *_widths(hidden_size), num_classes)
    keys = jax.random.split(key, len(sizes) - 1)
    return {
        f"w{i + 1}": jax.random.normal(keys[i], (sizes[i], sizes[i + 1])) * jnp.sqrt(2.0 / sizes[i])
        for i in range(len(sizes) - 1)
    }


def dense(x: jax.Array, w: jax.Array, normalise: bool) -> jax.Array:
    """``x @ w``, with ``w``'s columns weight-normalised when asked."""
    return weight_norm_matmul(x, w) if normalise else x @ w


def hidden(params, x: jax.Array, weight_norm_layers: Sequence[bool]) -> jax.Array:
    """Pre-activations of the first hidden layer, [batch, hidden]."""
    return dense(x, params["w1"], weight_norm_layers[0])


def _head(out1: jax.Array, params: Mapping[str, jax.Array], activation: Callable, wn: Sequence[bool]):
    """Everything after the first layer's matmul: (logits, hidden activity of every layer)."""
    n = len(wn)
    h = activation(out1)
    seen = [h]
    for i in range(2, n):
        h = activation(dense(h, params[f"w{i}"], wn[i - 1]))
        seen.append(h)
    logits = dense(h, params[f"w{n}"], wn[n - 1])
    return logits, seen[0] if len(seen) == 1 else jnp.concatenate(seen, axis=-1)


def forward(
    params,
    x: jax.Array,
    activation: Callable[[jax.Array], jax.Array],
    weight_norm_layers: Sequence[bool] = (True, False),
) -> jax.Array:
    """Logits [batch, classes] for preprocessed inputs ``x`` [batch, input size]."""
    return _head(hidden(params, x, weight_norm_layers), params, activation, weight_norm_layers)[0]


def effective_weights(params, weight_norm_layers: Sequence[bool]) -> dict[str, jax.Array]:
    """The weights the forward pass actually multiplies by (normalised where weight norm is on)."""
    return {f"w{i + 1}": weight_norm(params[f"w{i + 1}"]) if on else params[f"w{i + 1}"]
            for i, on in enumerate(weight_norm_layers)}


def count_params(params) -> int:
    """Number of scalar parameters."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))


# --- value checks (beside the model, as cl_sweep.components.registry asks) ----------------------------------
def _check_hidden_size(v: Any, cfg: Mapping) -> str | None:
    return None if _ints(v) is not None else "it must be a positive integer, or a list of them (one per hidden layer)"


def _check_weight_norm(v: Any, cfg: Mapping) -> str | None:
    widths = _ints(cfg["model"]["hidden_size"]) or [0]
    if isinstance(v, Sequence) and len(v) == len(widths) + 1 and all(isinstance(b, bool) for b in v):
        return None
    return f"it must be a list of {len(widths) + 1} booleans, one per layer (input side first, the output layer last)"


def _check_update_clip(v: Any, cfg: Mapping) -> str | None:
    ok = v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v != float("inf"))
    return None if ok else "it must be null (no clipping) or a positive number"


@register_model("mlp", label="MLP",
                checks={"hidden_size": _check_hidden_size, "weight_norm": _check_weight_norm, "update_clip": _check_update_clip})
def mlp(
    *,
    hidden_size: int | list[int] = 1000,
    weight_norm: list[bool] = (True, False),
    update_clip: Optional[float] = 0.01,
    input_size: int,
    num_classes: int,
) -> Model:
    """The paper's MLP (A.3, A.4): ``hidden_size`` units (a list: one hidden layer per width), the
    activation after each, centred weight norm with gain 1 on the layers ``weight_norm`` marks
    (paper: the first only), and the optimizer's update clipped elementwise at ``update_clip``
    (the paper's "gradient clip", 0.01; null disables it)."""
    widths, wn = _widths(hidden_size), tuple(bool(b) for b in weight_norm)

    def apply(params, x, activation, aux):
        return _head(hidden(params, x, wn), params, activation, wn)

    fused = None
    if wn[0]:  # the fused kernel updates a weight-normalised first layer
        fused = FusedInputLayer("w1", widths[0], lambda out1, rest, act: _head(out1, rest, act, wn)[0])
    return Model(
        init=lambda key: init_params(key, widths if len(widths) > 1 else widths[0], num_classes, input_size),
        apply=apply, update_clip=update_clip, fused=fused,
    )
