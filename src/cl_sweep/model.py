"""The paper's MLP: 784 → hidden → 10, no biases, Kaiming init, centred weight norm per layer.

Parameters are a plain dict ``{"w1": [784, hidden], "w2": [hidden, 10]}`` laid out ``[in, out]``
so both matmuls read contiguous rows. Weight norm (paper A.4) re-parameterises a layer: each
output unit's incoming weight vector is centred and scaled to unit L2 norm, gain fixed at 1.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from cl_sweep.ops import weight_norm, weight_norm_matmul

INPUT_SIZE = 784
NUM_CLASSES = 10
# torchvision's MNIST statistics, as the reference: x/255, then (x - mean) / std.
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081


def init_params(
    key: jax.Array, hidden_size: int, num_classes: int = NUM_CLASSES, input_size: int = INPUT_SIZE
) -> dict[str, jax.Array]:
    """Kaiming-normal init, N(0, 2 / fan_in), for both layers (paper A.3)."""
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (input_size, hidden_size)) * jnp.sqrt(2.0 / input_size),
        "w2": jax.random.normal(k2, (hidden_size, num_classes)) * jnp.sqrt(2.0 / hidden_size),
    }


def preprocess(images_uint8: jax.Array) -> jax.Array:
    """uint8 pixels [..., input size] → normalised float32."""
    return (images_uint8.astype(jnp.float32) * (1.0 / 255.0) - PIXEL_MEAN) * (1.0 / PIXEL_STD)


def dense(x: jax.Array, w: jax.Array, normalise: bool) -> jax.Array:
    """``x @ w``, with ``w``'s columns weight-normalised when asked."""
    return weight_norm_matmul(x, w) if normalise else x @ w


def hidden(params, x: jax.Array, weight_norm_layers: tuple[bool, bool]) -> jax.Array:
    """Pre-activations of the hidden layer, [batch, hidden]."""
    return dense(x, params["w1"], weight_norm_layers[0])


def forward(
    params,
    x: jax.Array,
    activation: Callable[[jax.Array], jax.Array],
    weight_norm_layers: tuple[bool, bool] = (True, False),
) -> jax.Array:
    """Logits [batch, classes] for preprocessed inputs ``x`` [batch, input size]."""
    h = activation(hidden(params, x, weight_norm_layers))
    return dense(h, params["w2"], weight_norm_layers[1])


def effective_weights(params, weight_norm_layers: tuple[bool, bool]) -> dict[str, jax.Array]:
    """The weights the forward pass actually multiplies by (normalised where weight norm is on)."""
    return {
        name: weight_norm(w) if on else w
        for (name, w), on in zip(sorted(params.items()), weight_norm_layers)
    }


def count_params(params) -> int:
    """Number of scalar parameters."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
