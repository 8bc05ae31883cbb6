"""Hydra ``Sweeper`` plugin ``hydra/sweeper=optuna`` backed by current Optuna."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Resumable Optuna sweeper; the logic lives in ``_impl`` (see its docstring).

    Hydra imports every public plugin module at startup, so Optuna is imported only when
    this sweeper is actually instantiated.
    """

    def __init__(
        self,
        sampler: Any,
        direction: Any = None,
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        params: DictConfig | None = None,
        heartbeat_interval: int | None = 60,
        grace_period: int | None = None,
        space: DictConfig | None = None,
        max_failure_rate: float = 1.0,
        objectives: Any = None,
        custom_search_space: str | None = None,
        pruner: Any = None,
    ) -> None:
        """Create the sweeper from ``hydra.sweeper`` (keys documented in ``config.py``)."""
        from ._impl import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(
            sampler=sampler,
            direction=direction,
            storage=storage,
            study_name=study_name,
            n_trials=n_trials,
            n_jobs=n_jobs,
            params=params,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_failure_rate=max_failure_rate,
            space=space,
            objectives=objectives,
            custom_search_space=custom_search_space,
            pruner=pruner,
        )

    @staticmethod
    def job_reporter(hydra_config: Any) -> Any:
        """The reporter a job of this sweeper hands its task ends to (None: this sweep prunes nothing).

        Called by cl_sweep's job (`cl_sweep.cli.task_reporter`) inside the job, in whatever
        process the launcher runs it; see ``_pruning``.
        """
        from ._pruning import job_reporter

        return job_reporter(hydra_config)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Forward to the implementation, which creates the launcher."""
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        """Run the sweep; see ``_impl.OptunaSweeperImpl.sweep``."""
        return self.sweeper.sweep(arguments)
