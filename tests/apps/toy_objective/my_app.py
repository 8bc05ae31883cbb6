"""Toy Hydra app for the Optuna sweeper tests: a quadratic objective with failure modes."""

import math

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def my_app(cfg: DictConfig) -> float | None:
    """Return ``-(x-0.3)^2 - (y-2)^2``; ``mode`` selects a failure instead.

    Args:
        cfg: ``x`` (float), ``y`` (int), ``mode``: ``ok``, ``nan`` (returns NaN, like a
            diverged run), ``raise`` (raises), ``none`` (returns None), ``str`` (returns a
            non-number).

    Returns:
        The objective value (maximum 0 at x=0.3, y=2).
    """
    if cfg.mode == "raise":
        raise RuntimeError("toy failure")
    # Unquoted `mode=nan` reaches the app as the float NaN, quoted `'nan'` as a string.
    if str(cfg.mode) == "nan":
        return math.nan
    if cfg.mode == "none":
        return None
    if cfg.mode == "str":
        return "not a number"  # type: ignore[return-value]
    if cfg.get("nan_if_x_below") is not None and cfg.x < cfg.nan_if_x_below:
        return math.nan
    return -((cfg.x - 0.3) ** 2) - (cfg.y - 2) ** 2


if __name__ == "__main__":
    my_app()
