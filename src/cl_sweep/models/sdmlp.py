"""SDMLP: the Sparse Distributed Memory MLP of Bricken et al. 2023, as ``model=sdmlp``.

    python -m cl_sweep model=sdmlp optimizer=sgd optimizer.learning_rate=0.05

"Sparse Distributed Memory is a Continual Learner" (ICLR 2023). Every choice below follows the
authors' code (github.com/TrentBrick/SDMContinualLearner, read at commit 74c9e9e); the file and
name each one comes from is given in brackets.

- Inputs: pixels / 255, then each example L2-normalised; no mean subtraction
  [py_scripts/data_loaders.py; models/SDM_Base.py ``forward``: ``x / norm(x)``].
- Hidden layer: ``input → hidden``, no bias; each neuron's incoming weight vector is non-negative
  and has unit L2 norm, enforced by projection after every optimizer step (clamp at 0, then
  rescale) [models/Base_Model.py ``check_enforce_pos_and_l2_norm_weights``, called in
  ``on_train_batch_end`` and ``on_fit_start``].
- Output layer: ``hidden → classes``, no bias, clamped non-negative after every step, not
  normalised; its outputs are the logits [same function: the clamp covers every parameter].
- Initialisation: PyTorch's ``nn.Linear`` default U(±1/sqrt(fan_in)), then the projection
  (about half the weights start at 0) [models/SDM_Base.py, ``on_fit_start``].
- Activation: Top-K *subtract* with the GABA switch [models/TopK_Act.py ``Top_K.forward``]:
  ``a = relu(x)``, ``v = (k+1)-th largest of a`` (no gradient), ``h = relu(a - g_i * v)``. With
  ``g_i = 1`` exactly k units stay on. ``g_i = clip(-1 + 2 c_i / T, -1, 1)`` per neuron, where
  ``c_i`` counts the examples on which neuron i was active so far (never reset between tasks):
  at first every neuron is *excited* (``g = -1`` adds v), so none starts dead; each neuron moves
  to true Top-K once it has fired T/2 … T times. The reference takes
  ``T = 5,000,000`` at 500 epochs per task (``num_binary_activations_for_gaba_switch`` in
  exp_commands/cont_learn_on_SplitMNIST.py), tuned so the switch finishes within the first task;
  here ``T = model.gaba_activations_per_epoch × benchmark.epochs_per_task`` with 10,000 per
  epoch (5,000,000 / 500), so the switch keeps its place in the schedule at any epoch budget.
  Difference: the reference also counts activations during its validation passes (the counter
  update has no ``self.training`` check); here evaluation never changes a model.
- Optimizer: the reference's Split-MNIST runs use plain SGD (no momentum: the paper argues
  momentum goes "stale" for neurons that are off, killing them), lr 0.05, batch 128, and clip the
  gradients' global norm at 1.0 before each step [models/Base_Model.py ``training_step``].
  Here the optimizer group stays free (``+sweep=sdmlp`` uses ``optimizer=sgd``) and
  ``model.grad_clip_norm`` (default 1.0) does the clip; batch size follows the benchmark (64 in
  this protocol). Loss: cross-entropy on the logits, one shared 10-way head (class-incremental).
- Width: the reference's Split-MNIST runs use 1,000 neurons with k = 10 (with EWC) and 10,000
  with k = 10 (without) [cont_learn_on_SplitMNIST.py ``exp_list``]; defaults here: 1,000 and 10,
  the width of the Hard ASH paper's MLP.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from cl_sweep.models.base import Model
from cl_sweep.training.ops import kth_largest
from cl_sweep.components.registry import positive, register_model


def init_params(key: jax.Array, hidden_size: int, num_classes: int, input_size: int) -> dict[str, jax.Array]:
    """U(±1/sqrt(fan_in)) for both layers, then projected (non-negative, unit-norm hidden neurons)."""
    k1, k2 = jax.random.split(key)
    b1, b2 = 1.0 / jnp.sqrt(input_size), 1.0 / jnp.sqrt(hidden_size)
    params = {
        "w1": jax.random.uniform(k1, (input_size, hidden_size), minval=-b1, maxval=b1),
        "w2": jax.random.uniform(k2, (hidden_size, num_classes), minval=-b2, maxval=b2),
    }
    return project(params)


def project(params: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Clamps every weight at 0 and rescales each hidden neuron's incoming vector (a column of w1) to unit L2 norm.

    A neuron whose weights are all zero after the clamp stays zero (the reference divides by a
    zero norm and gets NaN; that never happens in practice, and here it cannot).
    """
    w1 = jnp.maximum(params["w1"], 0.0)
    norm = jnp.sqrt(jnp.sum(w1 * w1, axis=0, keepdims=True))
    w1 = w1 / jnp.where(norm > 0, norm, 1.0)
    return {"w1": w1, "w2": jnp.maximum(params["w2"], 0.0)}


def preprocess(images_uint8: jax.Array) -> jax.Array:
    """uint8 pixels → [0, 1], then each example scaled to unit L2 norm (an all-zero image stays zero)."""
    x = images_uint8.astype(jnp.float32) * (1.0 / 255.0)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.where(norm > 0, norm, 1.0)


def gaba_sign(counts: jax.Array, gaba_activations: float) -> jax.Array:
    """Per-neuron inhibition sign ``clip(-1 + 2 c / T, -1, 1)``: -1 excites every neuron, +1 is true Top-K."""
    return jnp.clip(-1.0 + 2.0 * counts / gaba_activations, -1.0, 1.0)


def hidden(params, x: jax.Array, counts: jax.Array, k: int, gaba_activations: float) -> jax.Array:
    """Hidden activations [batch, hidden] of preprocessed inputs, under the GABA switch at ``counts``."""
    a = jax.nn.relu(x @ params["w1"])
    inhibition = lax.stop_gradient(kth_largest(a, k + 1))  # the (k+1)-th largest, per example
    return jax.nn.relu(a - gaba_sign(counts, gaba_activations) * inhibition)


def forward(params, x: jax.Array, counts: jax.Array, k: int, gaba_activations: float) -> tuple[jax.Array, jax.Array]:
    """(logits [batch, classes], hidden activations [batch, hidden])."""
    h = hidden(params, x, counts, k, gaba_activations)
    return h @ params["w2"], h


# --- the registration: keys, checks, and the engine's hooks --------------------------------------
def _check_k(v: Any, cfg: Mapping) -> str | None:
    hidden = cfg["model"]["hidden_size"]
    ok = isinstance(v, int) and not isinstance(v, bool) and isinstance(hidden, int) and 1 <= v < hidden
    return None if ok else f"it must be an integer in 1..{hidden - 1 if isinstance(hidden, int) else '?'} (below model.hidden_size)"


def _check_hidden(v: Any, cfg: Mapping) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 2 else "it must be an integer >= 2"


def _check_clip(v: Any, cfg: Mapping) -> str | None:
    return None if v is None or positive(v, cfg) is None else "it must be null (no clip) or a positive number"


def _check_no_weight_norm(v: Any, cfg: Mapping) -> str | None:
    if isinstance(v, Sequence) and len(v) == 2 and not any(v):
        return None
    return "SDMLP keeps its weights non-negative and unit-norm by projection, so weight norm must stay [false, false] (use model=mlp for weight norm)"


def _check_no_update_clip(v: Any, cfg: Mapping) -> str | None:
    return None if v is None else "SDMLP clips the gradients' global norm (model.grad_clip_norm) instead, so it must stay null"


@register_model(
    "sdmlp", label="SDMLP", activation="sdm_topk",
    checks={"hidden_size": _check_hidden, "k": _check_k, "gaba_activations_per_epoch": positive,
            "grad_clip_norm": _check_clip, "weight_norm": _check_no_weight_norm, "update_clip": _check_no_update_clip},
)
def sdmlp(
    *,
    hidden_size: int = 1000,
    k: int = 10,
    gaba_activations_per_epoch: float = 10000.0,
    grad_clip_norm: Optional[float] = 1.0,
    weight_norm: list[bool] = (False, False),
    update_clip: Optional[float] = None,
    input_size: int,
    num_classes: int,
    epochs_per_task: int,
) -> Model:
    """SDMLP with ``hidden_size`` neurons, ``k`` of them active once the GABA switch is done
    (reference: 10), the switch's length T = ``gaba_activations_per_epoch`` x epochs per task
    (reference: 5e6 at 500 epochs), and the gradients' global norm clipped at ``grad_clip_norm``
    before each step (reference: 1.0). Its own Top-K replaces the ``activation`` group.
    ``weight_norm`` and ``update_clip`` are the MLP's keys, fixed here (SDMLP projects instead)."""
    gaba = float(gaba_activations_per_epoch) * epochs_per_task

    def apply(params, x, activation, aux):  # the activation group is unused: GABA Top-K is the model's
        return forward(params, x, aux["counts"], k, gaba)

    def aux_update(aux, h, mask):  # the counters see this step's forward pass, after the step
        return {"counts": aux["counts"] + jnp.sum((h > 0) * mask[:, None], axis=0)}

    return Model(
        init=lambda key: init_params(key, hidden_size, num_classes, input_size),
        apply=apply, preprocess=preprocess, project=project,
        aux_init=lambda: {"counts": jnp.zeros((hidden_size,), jnp.float32)}, aux_update=aux_update,
        grad_clip_norm=grad_clip_norm, update_clip=update_clip,
    )
