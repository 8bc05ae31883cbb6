"""`train_and_evaluate(cfg) -> result`: one job (one grid point, all its seeds) from a composed config.

Knows configs but not Hydra, so notebooks and scripts call it with a plain dict or a DictConfig.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cl_sweep import __version__
from cl_sweep.activations import get_activation
from cl_sweep.config import validate
from cl_sweep.engine import DeviceData, Member, PopulationResult, Structure, to_device, train_population
from cl_sweep.optimizers import get_optimizer
from cl_sweep.results import SCHEMA_VERSION
from cl_sweep.tasks import TaskSplit, class_incremental_split

_DEVICE_DATA: dict[tuple[str, str | None], tuple[DeviceData, Any]] = {}


def _plain(cfg: DictConfig | Mapping) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def device_dataset(name: str, data_dir: str | None, progress: bool = True):
    """Loads a dataset once per process and keeps it on the device (uint8)."""
    from cl_sweep.data import load_dataset  # deferred: keeps `import cl_sweep.train` light

    key = (name, data_dir)
    if key not in _DEVICE_DATA:
        dataset = load_dataset(name, data_dir, progress=progress)
        _DEVICE_DATA[key] = (to_device(dataset), dataset)
    return _DEVICE_DATA[key]


def structure_of(cfg: Mapping) -> Structure:
    """The static part of a config: what decides the compiled program."""
    act = get_activation(cfg["activation"]["name"])
    return Structure(
        activation=act.name,
        optimizer=get_optimizer(cfg["optimizer"]["name"]).name,
        activation_static=tuple((k, cfg["activation"][k]) for k in act.static),
        hidden_size=cfg["model"]["hidden_size"],
        weight_norm=tuple(bool(b) for b in cfg["model"]["weight_norm"]),
        update_clip=cfg["model"]["update_clip"],
    )


def members_of(cfg: Mapping, seeds: Sequence[int]) -> list[Member]:
    """One member per seed, all with the config's traced hyperparameters."""
    act = get_activation(cfg["activation"]["name"])
    opt = get_optimizer(cfg["optimizer"]["name"])
    act_hp = {k: cfg["activation"][k] for k in act.traced}
    opt_hp = {k: cfg["optimizer"][k] for k in opt.hyperparameters}
    return [Member(seed, act_hp, opt_hp) for seed in seeds]


def hyperparameters_of(cfg: Mapping) -> dict[str, Any]:
    """The flat ``group.key -> value`` dict that identifies a grid point in results and tables."""
    hp = {}
    for group in ("activation", "optimizer"):
        for k, v in cfg[group].items():
            if k != "name":
                hp[f"{group}.{k}"] = v
    for k in ("hidden_size", "weight_norm", "update_clip"):
        hp[f"model.{k}"] = cfg["model"][k]
    for k in ("batch_size", "epochs_per_task", "limit_per_task"):
        hp[f"benchmark.{k}"] = cfg["benchmark"][k]
    return hp


def split_of(cfg: Mapping, dataset) -> TaskSplit:
    bench = cfg["benchmark"]
    return class_incremental_split(dataset.train_labels, dataset.test_labels, bench["num_tasks"], bench["classes_per_task"])


def _git_revision() -> str | None:
    """The source checkout's commit (with "+dirty" for uncommitted changes), or None outside git."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "src", "conf"], capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), float(arr.std())  # population std (ddof=0), as the paper


def train_and_evaluate(cfg: DictConfig | Mapping, *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Trains all seeds of one config together and returns the schema-1 result dict (not yet written).

    With ``early_stop.enabled``, the first ``after_seeds`` seeds train first; if their mean final
    accuracy is below ``threshold`` the rest are skipped and ``early_stopped`` is true.
    """
    cfg = _plain(cfg)
    validate(cfg)
    start = time.perf_counter()
    device_data, dataset = device_dataset(cfg["benchmark"]["dataset"], cfg.get("data_dir"), cfg["progress"])
    split = split_of(cfg, dataset)
    structure = structure_of(cfg)
    seeds = [cfg["seed"] + i for i in range(cfg["n_seeds"])]
    bench = cfg["benchmark"]

    def run(seed_group: list[int], desc: str) -> PopulationResult:
        return train_population(
            structure, members_of(cfg, seed_group), device_data, split,
            batch_size=bench["batch_size"], epochs_per_task=bench["epochs_per_task"],
            limit_per_task=bench["limit_per_task"], progress=cfg["progress"], desc=desc,
        )

    es = cfg["early_stop"]
    phases = [seeds]
    if es["enabled"] and len(seeds) > es["after_seeds"]:
        phases = [seeds[: es["after_seeds"]], seeds[es["after_seeds"] :]]

    trained: list[int] = []
    parts: list[PopulationResult] = []
    early_stopped = False
    for i, group in enumerate(phases):
        seeds_desc = f"seeds {group[0]}-{group[-1]} " if len(group) > 1 else f"seed {group[0]} "
        parts.append(run(group, seeds_desc))
        trained += group
        if i == 0 and len(phases) > 1:
            first = parts[0]
            ok = ~first.diverged
            mean = float(first.final_accuracy[ok].mean()) if ok.any() else float("nan")
            if not (mean >= es["threshold"]):  # NaN (all diverged) also stops
                early_stopped = True
                break

    diverged = np.concatenate([p.diverged for p in parts])
    final = np.concatenate([p.final_accuracy for p in parts])
    matrix = np.concatenate([p.accuracy_matrix for p in parts])
    final_list = [None if d else float(a) for a, d in zip(final, diverged)]
    status = "diverged" if diverged.any() else "ok"
    if status == "ok":
        mean, std = _mean_std([a for a in final_list if a is not None])
    else:
        mean = std = None

    import jax
    import jaxlib

    return {
        "schema": SCHEMA_VERSION,
        "status": status,
        "benchmark": cfg["benchmark"]["name"],
        "activation": cfg["activation"]["name"],
        "optimizer": cfg["optimizer"]["name"],
        "hyperparameters": hyperparameters_of(cfg),
        "config": cfg,
        "overrides": list(overrides),
        "seeds": trained,
        "n_seeds_requested": len(seeds),
        "early_stopped": early_stopped,
        "diverged": [bool(d) for d in diverged],
        "final_accuracy": final_list,
        "final_accuracy_mean": mean,
        "final_accuracy_std": std,
        "accuracy_matrix": [[[float(v) for v in row] for row in m] for m in matrix],
        "wall_time_s": round(time.perf_counter() - start, 3),
        "versions": {"cl_sweep": __version__, "git": _git_revision(), "jax": jax.__version__, "jaxlib": jaxlib.__version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def objective(result: Mapping[str, Any]) -> float:
    """The float a sweeper optimises: ``final_accuracy_mean``, NaN for a diverged job."""
    mean = result["final_accuracy_mean"]
    return float("nan") if mean is None or not math.isfinite(mean) else float(mean)
