"""Models behind one protocol (`Model`, cl_sweep.models.base), each registered by name with
``cl_sweep.register_model``: the paper's MLP (any depth), SDMLP and FlyModel, and a user's own
(a flax.linen or flax.nnx module, or plain functions)."""

from cl_sweep.models.base import FusedInputLayer, Model, build, build_cached, from_linen, from_nnx, standard_preprocess
from cl_sweep.models import mlp, sdmlp, flymodel  # noqa: E402,F401  the built-in registrations
from cl_sweep.components.registry import MODELS


def get_model(name: str):
    """The registered model component; an unknown name raises ValueError listing the allowed ones."""
    return MODELS.lookup(name)


__all__ = ["Model", "FusedInputLayer", "MODELS", "build", "build_cached", "from_linen", "from_nnx", "get_model",
           "standard_preprocess"]
