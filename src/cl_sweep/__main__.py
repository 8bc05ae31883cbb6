"""The thin Hydra entry: compose → train_and_evaluate → write result.json → return the optimised float.

    python -m cl_sweep activation=hard_ash optimizer=adagrad
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cl_sweep.config import config_dir  # importing it registers the typed schemas before Hydra composes
from cl_sweep.results import METRICS, RUN_CONTROL_KEYS


def _load_plugins() -> None:
    """Imports installed plugins and the command line's ``plugins=[...]`` before Hydra composes:
    their components are config options (``activation=<theirs>``)."""
    from cl_sweep.components.plugins import PluginError, load_plugins, plugins_from_argv

    try:
        load_plugins(plugins_from_argv(sys.argv[1:]))
    except PluginError as e:
        print(f"cl_sweep: {e}", file=sys.stderr)
        raise SystemExit(2) from None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float:
    from cl_sweep.cli import run_job  # after Hydra parsed the command line: `--help` stays fast

    hc = HydraConfig.get()
    return run_job(cfg, overrides=list(hc.overrides.task), output_dir=hc.runtime.output_dir)


# What a sweep of this task optimises when it does not say (read by hydra/sweeper=optuna): the
# returned final_accuracy_mean, maximised; `metrics` are the names hydra.sweeper.objectives may use;
# `run_control` the keys that change no number (progress, cpu_threads, ...), left out of study names.
main.__wrapped__.sweep_objective = {"metric": "final_accuracy_mean", "direction": "maximize", "metrics": list(METRICS),
                                    "run_control": sorted(RUN_CONTROL_KEYS)}


if __name__ == "__main__":
    _load_plugins()
    sys.exit(main())
