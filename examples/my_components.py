# my_components.py — anywhere on the Python path, or given as a file path
import jax, optax
import cl_sweep

@cl_sweep.register_activation("shifted_relu")
def shifted_relu(x, *, shift: float = 0.5):
    return jax.nn.relu(x - shift)

@cl_sweep.register_optimizer("adagrad_wd")
def adagrad_wd(*, learning_rate: float = 2e-4, weight_decay: float = 1e-4):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adagrad(learning_rate))
