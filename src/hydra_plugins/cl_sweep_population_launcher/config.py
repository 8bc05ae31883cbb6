"""Structured config of the `population` launcher, registered as `hydra/launcher=population`."""

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class PopulationLauncherConf:
    _target_: str = "hydra_plugins.cl_sweep_population_launcher.population_launcher.PopulationLauncher"
    # Models (grid points x seeds) per compiled call; null = 2 on CPU, 256 on an accelerator.
    # benchmarks/step_time.py measures the best value for a machine; results do not depend on
    # it beyond float rounding.
    max_population: Optional[int] = None
    # Compile every structure's first population in parallel threads before training any:
    # compilation is most of a big sweep's time on a GPU. null = on accelerators only.
    precompile: Optional[bool] = None


ConfigStore.instance().store(group="hydra/launcher", name="population", node=PopulationLauncherConf, provider="cl_sweep")
