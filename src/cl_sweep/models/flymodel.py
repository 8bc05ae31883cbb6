"""``model=flymodel``: Shen, Dasgupta & Navlakha 2021's FlyModel, trained by its own associative
rule (no gradients), so it replaces the ``activation`` and ``optimizer`` groups (both unused).

    python -m cl_sweep model=flymodel

A fixed sparse binary random expansion to ``hidden_size`` Kenyon cells, k-winners-take-all, and
an associative rule that changes only the true class's output weights (partial freezing); one
pass. Defaults: Bricken et al. 2023's raw-pixel Split-MNIST setting with 1,000 cells;
`cl_sweep.training.fly` gives the source of every choice (the authors' notebooks) and holds the trainer.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from cl_sweep.models.base import Model
from cl_sweep.components.registry import between, positive, positive_int, register_model, unit_interval


def _check_weight_max(v: Any, cfg: Mapping) -> str | None:
    return None if v is None or positive(v, cfg) is None else "it must be null (no clip) or a positive number"


def _check_connections(v: Any, cfg: Mapping) -> str | None:
    return None if positive_int(v, cfg) is None else "it must be a positive integer (at most the input size, 784 for MNIST)"


@register_model(
    "flymodel", label="FlyModel", activation="fly_kwta", optimizer="associative",
    checks={"hidden_size": positive_int, "connections": _check_connections, "k": between(1, "model.hidden_size"),
            "learning_rate": positive, "decay": unit_interval, "weight_max": _check_weight_max},
)
def flymodel(
    *,
    hidden_size: int = 1000,
    connections: int = 32,
    k: int = 10,
    learning_rate: float = 0.005,
    decay: float = 0.0,
    weight_max: Optional[float] = 1.0,
) -> Model:
    """``hidden_size`` Kenyon cells m, each summing ``connections`` inputs; ``k`` active per input
    (1 %); the rule's step ``learning_rate`` (beta) and forgetting ``decay`` (alpha, the authors use
    none); output weights clipped at ``weight_max`` (the authors' 1; null = no clip)."""
    from cl_sweep.training.fly import FlyConfig, train_fly_population

    config = FlyConfig(expansion=hidden_size, connections=connections, k=k, learning_rate=learning_rate,
                       decay=decay, weight_max=weight_max)

    def trainer(seeds, data, split, **schedule):
        return train_fly_population(config, seeds, data, split, **schedule)

    return Model(init=None, apply=None, trainer=trainer)
