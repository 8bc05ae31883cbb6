# my_components.py — anywhere on the Python path, or given as a file path
import jax, optax
import cl_sweep

@cl_sweep.register_activation("shifted_relu")
def shifted_relu(x, *, shift: float = 0.5):
    return jax.nn.relu(x - shift)

@cl_sweep.register_optimizer("adagrad_wd")
def adagrad_wd(*, learning_rate: float = 2e-4, weight_decay: float = 1e-4):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adagrad(learning_rate))

# A model: a flax.linen module whose fields are its hyperparameters. The engine calls it as
# module(x, activation) with the `activation` group's function and fills in num_classes.
import flax.linen as nn

@cl_sweep.register_model("small_cnn")
class SmallCNN(nn.Module):
    features: int = 16
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, activation):
        x = x.reshape(x.shape[0], 28, 28, 1)  # MNIST's flattened pixels as an image
        x = activation(nn.Conv(self.features, (3, 3), strides=2)(x))
        x = activation(nn.Conv(self.features, (3, 3), strides=2)(x))
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))

# A benchmark: a data set and its task split; every benchmark also has batch_size,
# epochs_per_task and limit_per_task. Here Split-MNIST in three tasks of three digits.
from cl_sweep.components.benchmarks import class_incremental

@cl_sweep.register_benchmark("split_mnist_3x3")
def split_mnist_3x3(*, num_tasks: int = 3, classes_per_task: int = 3):
    return cl_sweep.Benchmark("mnist", class_incremental(num_tasks, classes_per_task))
