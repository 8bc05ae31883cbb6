"""cl_sweep: continual-learning training and hyperparameter sweeps in JAX, reproducing Hard ASH.

Bring your own components: ``cl_sweep.register_activation`` and ``cl_sweep.register_optimizer``
(cl_sweep.registry); load them with ``plugins=[my_module]`` or a ``cl_sweep.plugins`` entry point.
"""

from cl_sweep.registry import register_activation, register_optimizer

__version__ = "0.1.0"
__all__ = ["register_activation", "register_optimizer", "__version__"]
