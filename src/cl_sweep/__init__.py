"""cl_sweep: continual-learning training and hyperparameter sweeps in JAX, reproducing Hard ASH.

Bring your own components (cl_sweep.components.registry): ``register_activation``, ``register_optimizer``,
``register_model`` (a flax module or a `cl_sweep.Model`), ``register_strategy`` (a
`cl_sweep.Regulariser`) and ``register_benchmark`` (a `cl_sweep.Benchmark`); load them with
``plugins=[my_module]`` or a ``cl_sweep.plugins`` entry point.
"""

from cl_sweep.components.registry import (
    register_activation, register_benchmark, register_logger, register_model, register_optimizer, register_strategy,
)

__version__ = "0.1.0"
__all__ = ["register_activation", "register_optimizer", "register_model", "register_strategy", "register_benchmark",
           "register_logger",
           "Model", "Regulariser", "Benchmark", "__version__"]


def __getattr__(name: str):
    if name == "Model":  # lazily: `import cl_sweep` stays free of jax until a model is needed
        from cl_sweep.models.base import Model

        return Model
    if name == "Regulariser":
        from cl_sweep.components.strategies import Regulariser

        return Regulariser
    if name == "Benchmark":
        from cl_sweep.components.benchmarks import Benchmark

        return Benchmark
    raise AttributeError(f"module 'cl_sweep' has no attribute {name!r}")
