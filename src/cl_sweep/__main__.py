"""The thin Hydra entry: compose → train_and_evaluate → write result.json → return the optimised float.

    python -m cl_sweep activation=hard_ash optimizer=adagrad
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import cl_sweep.config  # noqa: F401  registers the typed schemas before Hydra composes


def _config_dir() -> str:
    """conf/ inside an installed wheel, else the repository's top-level conf/ (source checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise SystemExit("cl_sweep: cannot find the config folder conf/ (reinstall the package)")


def _load_plugins() -> None:
    """Imports installed plugins and the command line's ``plugins=[...]`` before Hydra composes:
    their components are config options (``activation=<theirs>``)."""
    from cl_sweep.plugins import PluginError, load_plugins, plugins_from_argv

    try:
        load_plugins(plugins_from_argv(sys.argv[1:]))
    except PluginError as e:
        print(f"cl_sweep: {e}", file=sys.stderr)
        raise SystemExit(2) from None


@hydra.main(version_base="1.3", config_path=_config_dir(), config_name="config")
def main(cfg: DictConfig) -> float:
    from cl_sweep.cli import run_job  # after Hydra parsed the command line: `--help` stays fast

    hc = HydraConfig.get()
    return run_job(cfg, overrides=list(hc.overrides.task), output_dir=hc.runtime.output_dir)


if __name__ == "__main__":
    _load_plugins()
    sys.exit(main())
