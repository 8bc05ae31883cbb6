"""A new activation and a new optimizer for cl_sweep: the README's "Your own components" example.

Importing this module registers both; the entry point in pyproject.toml makes cl_sweep import it.
"""

import jax
import optax

import cl_sweep


@cl_sweep.register_activation("shifted_relu")
def shifted_relu(x, *, shift: float = 0.5):
    return jax.nn.relu(x - shift)


@cl_sweep.register_optimizer("adagrad_wd")
def adagrad_wd(*, learning_rate: float = 2e-4, weight_decay: float = 1e-4):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adagrad(learning_rate))
