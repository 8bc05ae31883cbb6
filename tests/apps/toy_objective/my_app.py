"""Toy Hydra app for the Optuna sweeper tests: a quadratic objective with failure modes."""

import json
import math
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


def _marker(name: str, cfg: DictConfig, **extra: object) -> None:
    """Write ``<job output dir>/<name>.json`` with the job's params (atomically)."""
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"x": cfg.x, "y": cfg.y, "pid": os.getpid(), **extra}
    tmp = out / f".{name}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, out / f"{name}.json")


def _wait_for(path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def my_app(cfg: DictConfig) -> float | None:
    """Return ``-(x-0.3)^2 - (y-2)^2``; ``mode`` selects a failure instead.

    Args:
        cfg: ``x`` (float), ``y`` (int), ``mode``: ``ok``, ``nan`` (returns NaN, like a
            diverged run), ``raise`` (raises), ``none`` (returns None), ``str`` (returns a
            non-number). Shared-study tests add ``markers`` (write ``started.json`` and
            ``done.json`` into the job's output dir), ``sleep`` (seconds per job),
            ``wait_for`` (block until that file exists) and ``hang_once`` (the first job
            that finds that file missing creates it and sleeps ``hang_s``, to be killed).

    Returns:
        The objective value (maximum 0 at x=0.3, y=2).
    """
    if cfg.markers:
        _marker("started", cfg)
    if cfg.hang_once is not None and not os.path.exists(cfg.hang_once):
        Path(cfg.hang_once).write_text(str(os.getpid()))
        time.sleep(cfg.hang_s)
    if cfg.wait_for is not None:
        _wait_for(cfg.wait_for)
    if cfg.sleep:
        time.sleep(cfg.sleep)
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
    value = -((cfg.x - 0.3) ** 2) - (cfg.y - 2) ** 2
    if cfg.markers:
        _marker("done", cfg, value=value)
    return value


# The app's own objective is maximised (as cl_sweep's entry point declares its accuracy); without this
# line the Optuna sweeper would minimise it, upstream's default for an app that says nothing.
# `run_control`: keys that change no number (here how long a job sleeps, whether it writes markers), left
# out of the default study name so that a re-run with another value resumes the same study.
my_app.__wrapped__.sweep_objective = {"direction": "maximize", "run_control": ["sleep", "markers"]}


if __name__ == "__main__":
    my_app()
