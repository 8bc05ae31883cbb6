"""cl_sweep: continual-learning training and hyperparameter sweeps in JAX, reproducing Hard ASH."""

__version__ = "0.1.0"
