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
# returned accuracy, maximised: final_accuracy_mean, or validation_accuracy_mean when the benchmark
# holds examples out (benchmark.validation_fraction > 0; its pruner then reads validation too); `metrics` are the names hydra.sweeper.objectives may use;
# `run_control` the keys that change no number (progress, cpu_threads, ...), left out of study names.
main.__wrapped__.sweep_objective = {"metric": "final_accuracy_mean", "direction": "maximize", "metrics": list(METRICS),
                                    "run_control": sorted(RUN_CONTROL_KEYS)}


def _one_mode(argv: list[str]) -> None:
    """Refuses, in one paragraph, a command line naming two of Hydra's modes (``--multirun --cfg job``):
    Hydra raises a bare ValueError with a traceback for it, and says nothing of what to do instead."""
    from hydra._internal.utils import get_args_parser

    try:
        args, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:  # a malformed flag: Hydra's own parser says what is wrong when main() runs
        return
    given = [flag for flag, on in (("--run", args.run), ("--multirun", args.multirun), ("--cfg", args.cfg),
                                   ("--info", args.info), ("--shell-completion", args.shell_completion)) if on]
    if len(given) < 2:
        return
    print(
        f"cl_sweep: {' and '.join(given)} cannot be combined: a command runs one of Hydra's modes (--run, "
        "--multirun, --cfg, --info, --shell-completion). To see one job's config, drop --multirun and give "
        "each key one value (python -m cl_sweep --cfg job activation=relu); to list a sweep's jobs without "
        "running them, drop --cfg and add hydra/sweeper=grid hydra.sweeper.dry_run=true.",
        file=sys.stderr,
    )
    raise SystemExit(2)


if __name__ == "__main__":
    _one_mode(sys.argv[1:])
    _load_plugins()
    sys.exit(main())
