"""Structured configs of the Optuna sweeper, registered as ``hydra/sweeper=optuna``."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class SamplerConfig:
    """Base of the sampler nodes: any importable ``optuna.samplers.BaseSampler`` subclass.

    Sampler arguments without a field here are added with ``+``, e.g.
    ``+hydra.sweeper.sampler.multivariate=true``.
    """

    _target_: str = MISSING
    seed: int | None = None


# One node per sampler, with upstream hydra-optuna-sweeper's option names and keys (its main
# branch, the Optuna >= 4 rewrite); the defaults are Optuna's own. Keys taking objects
# (independent_sampler, constraints_func, ...) are set with `+` and `_target_` nodes if needed.
@dataclass
class TPESamplerConfig(SamplerConfig):
    """``optuna.samplers.TPESampler`` (the default)."""

    _target_: str = "optuna.samplers.TPESampler"
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool | None = None
    warn_independent_sampling: bool | None = None


@dataclass
class RandomSamplerConfig(SamplerConfig):
    """``optuna.samplers.RandomSampler``."""

    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    """``optuna.samplers.CmaEsSampler`` (needs the ``cmaes`` package, a dependency of cl_sweep)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: str | None = None
    popsize: int | None = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


@dataclass
class QMCSamplerConfig(SamplerConfig):
    """``optuna.samplers.QMCSampler``."""

    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    """``optuna.samplers.NSGAIISampler`` (a genetic algorithm; multi-objective too)."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class NSGAIIISamplerConfig(NSGAIISamplerConfig):
    """``optuna.samplers.NSGAIIISampler`` (reference-point NSGA for many objectives): NSGA-II's keys and one more."""

    _target_: str = "optuna.samplers.NSGAIIISampler"
    dividing_parameter: int = 3


@dataclass
class GPSamplerConfig(SamplerConfig):
    """``optuna.samplers.GPSampler`` (Gaussian-process Bayesian optimisation; needs ``torch`` and ``scipy``)."""

    _target_: str = "optuna.samplers.GPSampler"
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    warn_independent_sampling: bool = True


@dataclass
class GridSamplerConfig(SamplerConfig):
    """``optuna.samplers.GridSampler``: every point of a discrete search space once, in random order.

    Its grid is the sweep's search space (choices, int ranges, stepped floats), as upstream builds
    it; ``n_trials`` above the grid's size is lowered to it.
    """

    _target_: str = "optuna.samplers.GridSampler"


@dataclass
class MOTPESamplerConfig(SamplerConfig):
    """Removed from Optuna (4.0): upstream keeps the name to say so; so do we."""

    _target_: str = "optuna.samplers.MOTPESampler"


@dataclass
class PrunerConfig:
    """Base of the pruner nodes: an ``optuna.pruners.BasePruner`` built from the node's keys.

    Each node's keys are its Optuna constructor's own keyword names and defaults. A job of a
    pruning sweep reports its running mean accuracy after every task (step = task index) and
    stops at the task boundary where the pruner says so (see ``_pruning``).
    """

    _target_: str = MISSING


@dataclass
class NopPrunerConfig(PrunerConfig):
    """``optuna.pruners.NopPruner``: nothing is pruned (the default); jobs report nothing."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig(PrunerConfig):
    """``optuna.pruners.MedianPruner``: stop below the median of earlier trials at the same task."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    """``optuna.pruners.SuccessiveHalvingPruner`` (asynchronous successive halving)."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"  # "auto" or an int
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    """``optuna.pruners.HyperbandPruner``."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"  # "auto" or an int (the number of tasks is the natural one)
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class WilcoxonPrunerConfig(PrunerConfig):
    """``optuna.pruners.WilcoxonPruner``: a Wilcoxon signed-rank test against the best trial's per-task values."""

    _target_: str = "optuna.pruners.WilcoxonPruner"
    p_threshold: float = 0.1
    n_startup_steps: int = 2


@dataclass
class OptunaSweeperConf:
    """Config of :class:`~hydra_plugins.cl_sweep_optuna_sweeper.optuna_sweeper.OptunaSweeper`.

    Key names follow the PyPI ``hydra-optuna-sweeper`` where they overlap; see the
    ``_impl`` module docstring for the resume and stale-trial rules.
    """

    _target_: str = "hydra_plugins.cl_sweep_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # The sweeper instantiates the sampler itself so a bad `_target_` gets a message that
    # names hydra.sweeper.sampler instead of Hydra's generic InstantiationException.
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])

    sampler: SamplerConfig = MISSING
    # hydra/sweeper/pruner=none|median|successive_halving|hyperband|wilcoxon. A PRUNED trial is
    # finished: it counts towards n_trials like a COMPLETE one (see the `_impl` docstring).
    pruner: PrunerConfig = MISSING
    # maximize | minimize, or a list of them for several objectives ([maximize, minimize]). `Any`
    # so a wrong value reaches our own validation. null (the default): the task's declared direction
    # (cl_sweep's entry point declares maximize for final_accuracy_mean), else minimize, upstream's
    # default, for any other app.
    direction: Any = None
    # null: the job's return value is the objective (a number; a list of numbers for several
    # directions, as upstream). A list of metric names: each is read from the job's metrics by
    # name (cl_sweep: any numeric key of its result file, e.g. [final_accuracy_mean,
    # active_fraction_mean]; another app returns a mapping), one direction per name.
    objectives: Any = None
    # Absolute (via the launch cwd) so re-running the same command from the same directory
    # finds the same study; `journal:///abs/file.log` selects Optuna's JournalStorage.
    storage: str | None = "sqlite:///${hydra.runtime.cwd}/multirun/optuna.sqlite3"
    # null: derived from the job name, the fixed overrides and the search space.
    study_name: str | None = None
    # Target number of finished (COMPLETE or PRUNED) trials in the study (not trials per invocation); exact even
    # with several sweeper processes on one study (see the `_impl` docstring).
    n_trials: int = 20
    # Trials asked and launched together per launcher call.
    n_jobs: int = 1
    # After each batch: stop the sweep with an error when more than this share of its trials
    # failed (upstream's key). 1.0 (the default) never stops: a diverged run is a result, recorded
    # as a FAIL trial, and the next run of the same command replaces it; upstream's own default is 0.0.
    max_failure_rate: float = 1.0
    # Param name -> Hydra sweep string, e.g. `tag(log, interval(1e-6, 1e-4))`.
    params: dict[str, Any] = field(default_factory=dict)
    # Per group option: {group: {option: {key: sweep string}}}. For each group option the job
    # composes with (e.g. activation=hard_ash), its entries join `params` as `group.key`; explicit
    # `params` and command-line sweeps win. This lets one preset cover every (activation, optimizer) pair.
    space: dict[str, Any] = field(default_factory=dict)
    # Upstream's key: the dotpath of a function (cfg, trial) -> None, called after the space's own
    # parameters are sampled, that suggests more (e.g. one whose range depends on another);
    # each becomes an override `name=value` (`+name` for a key the config lacks).
    custom_search_space: str | None = None
    # Seconds between heartbeats of running trials: Optuna's on RDB storages, our own
    # (a trial system attribute) on journal storages; null disables it. Lets other workers,
    # on any host, fail the trials of a worker that died.
    heartbeat_interval: int | None = 60
    # Seconds without a heartbeat before a RUNNING trial is stale; null: 2 * heartbeat_interval.
    grace_period: int | None = None


def _register() -> None:
    cs = ConfigStore.instance()
    node = OmegaConf.structured(OptunaSweeperConf)
    # Open dict: `hydra.sweeper.params.lr=...` then works on the command line without `+`.
    OmegaConf.set_struct(node.params, False)
    cs.store(group="hydra/sweeper", name="optuna", node=node, provider="cl_sweep")
    for name, node in (
        ("tpe", TPESamplerConfig),
        ("random", RandomSamplerConfig),
        ("cmaes", CmaEsSamplerConfig),
        ("qmc", QMCSamplerConfig),
        ("nsgaii", NSGAIISamplerConfig),
        ("nsgaiii", NSGAIIISamplerConfig),
        ("gp", GPSamplerConfig),
        ("grid", GridSamplerConfig),
        ("motpe", MOTPESamplerConfig),
    ):
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="cl_sweep")
    for name, node in (
        ("none", NopPrunerConfig),
        ("median", MedianPrunerConfig),
        ("successive_halving", SuccessiveHalvingPrunerConfig),
        ("hyperband", HyperbandPrunerConfig),
        ("wilcoxon", WilcoxonPrunerConfig),
    ):
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="cl_sweep")


_register()
