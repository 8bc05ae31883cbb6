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


@hydra.main(version_base="1.3", config_path=_config_dir(), config_name="config")
def main(cfg: DictConfig) -> float:
    from cl_sweep.cli import run_job  # after Hydra parsed the command line: `--help` stays fast

    hc = HydraConfig.get()
    return run_job(cfg, overrides=list(hc.overrides.task), output_dir=hc.runtime.output_dir)


if __name__ == "__main__":
    sys.exit(main())
