"""Structured config of the `grid` sweeper, registered as `hydra/sweeper=grid`."""


from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.cl_sweep_grid_sweeper.grid_sweeper.GridSweeper"
    # {group: {option: {key: [values]}}}: for every selected option of a group, the Cartesian
    # product of its keys' values; groups multiply. An option with no entry contributes one point.
    grid: Any = field(default_factory=dict)
    # Jobs handed to the launcher at once (null: all). A population launcher groups within a batch.
    max_batch_size: Optional[int] = None
    # Compose and value-check every job before the first one starts.
    validate: bool = True
    # Print the job count and every job's overrides, launch nothing.
    dry_run: bool = False
    # Keep every `stride`-th job (a documented, deterministic sample of the grid; 1 = all).
    stride: int = 1


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="cl_sweep")
