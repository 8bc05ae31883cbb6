"""Optuna sweep loop: resumable studies shared by concurrent workers, stale-trial recovery.

Resume rule: ``n_trials`` is the number of COMPLETE trials the study should end with,
not the number of trials to add. The study is persistent (``create_study(...,
load_if_exists=True)``), so ``n_trials=3`` followed by the same command with
``n_trials=5`` leaves exactly 5 COMPLETE trials, and a third run with ``n_trials=5``
launches nothing and says the study is already complete. Failed trials (job raised,
returned None, NaN/inf or a non-number) are not COMPLETE, so the next invocation asks for
replacements. Within one invocation at most ``n_trials - complete - running`` trials
(counted when it starts) are launched, so an always-failing job cannot loop forever.

Pruning (``hydra/sweeper/pruner=median|successive_halving|hyperband|wilcoxon``, see
``_pruning``): each job reports its running mean accuracy after every task to its trial and
stops at the task boundary where the pruner says so; its result says ``status: "pruned"``
and the trial is told PRUNED. A PRUNED trial is finished, like a COMPLETE one: it counts
towards ``n_trials`` (so ``n_trials`` is the number of COMPLETE + PRUNED trials; Optuna's own
``study.optimize(n_trials=...)`` counts it the same way), it is not replaced on resume, and
it is no failure for ``max_failure_rate``. Read "COMPLETE" below as "COMPLETE or PRUNED".

Budget rule (exact with any number of concurrent workers, i.e. sweeper processes on one
study, on one machine or several): every storage numbers trials atomically, so trial
numbers order the asks of all workers. Before every ask a worker fails stale trials
(below) and stops if ``n_trials`` trials are already COMPLETE or RUNNING. After
``study.ask()`` gave trial ``k``, that trial may run only if fewer than ``n_trials``
trials numbered below ``k`` are COMPLETE, or RUNNING and not stale. Otherwise it is told
FAIL before any parameter is sampled, with the user attribute ``budget_exceeded=True``
(FAIL rather than PRUNED: TPE ignores FAIL trials but would treat a PRUNED one as a bad
point), and the worker stops asking. Trials asked by others and not yet checked count as
RUNNING, so the rule errs towards stopping, never towards running too many: as long as
no trial fails, the workers together end with exactly ``n_trials`` COMPLETE trials, and
never with more. If a trial that was counted as RUNNING later FAILs (its job crashed or
returned NaN, or its process died), the study can end with fewer than ``n_trials``
COMPLETE trials; running the same command again fills it up. New trials are created
with their owner tag in one storage operation (``_budget.ask_tagged``), so no worker
ever sees another's fresh trial untagged and fails it.

Stale trials: before each ask, RUNNING trials whose process is gone are marked FAIL
(and thereby retried, since they are not COMPLETE):

* RDB storages with ``heartbeat_interval`` set: this sweeper records a heartbeat for its
  trials from the moment they are asked; Optuna's ``fail_stale_trials`` fails trials whose
  heartbeat is older than ``grace_period`` (default ``2 * heartbeat_interval``), from any host.
* Journal storages with ``heartbeat_interval`` set: the same with our own heartbeat, a
  ``sweeper_heartbeat`` system attribute holding the wall-clock time (hosts sharing a
  journal need clocks synchronised well within ``grace_period``).
* Any storage: every trial asked by the sweeper carries a ``sweeper_owner`` user attribute
  (host, pid, process start time). A RUNNING trial without that tag, or owned by a process
  on this host that no longer exists (a SIGKILLed sweeper), is failed right away. Trials
  of live processes and of other hosts are left to the heartbeat.

Search space rule: a study keeps one search space. Before any ask, the trials already in
the study that have sampled parameters are compared with the requested space
(:func:`space_mismatches`); a parameter whose stored distribution differs, or, in COMPLETE,
PRUNED or RUNNING trials, a parameter missing on either side refuses the sweep. Resuming
with the same space (the same command) works as before; a study without trials has
nothing to compare. An empty space (nothing to sample) is refused too. Refusals, like any
bad ``hydra.sweeper`` value, are one paragraph on stderr and exit status 2, before any
trial is asked (:func:`refuse`).

``${hydra:...}`` interpolations (e.g. in a preset's ``hydra.sweep.dir``) resolve in the
sweeper's own process against the sweep-level config (:func:`set_controller_hydra_config`).

Objectives and directions (upstream's rules, :func:`resolve_objectives`): ``direction`` is one
direction or a list, one per objective; not given, the task's declared direction
(:func:`task_objective`: cl_sweep's entry point maximises ``final_accuracy_mean``), else
minimize. A job's value is its return value (a number, or a sequence for several directions),
or, with ``objectives`` naming metrics, those entries of the mapping it returns or of the
``metrics`` its return value carries (:func:`job_outcome`). With several directions the
results file holds the Pareto front (``solutions``), as upstream writes it.

A seeded sampler is re-seeded with ``seed + <trials already in the study>`` so a resumed
run does not replay the random start-up samples of the first run; a fresh study uses
``seed`` itself, so two fresh studies with the same seed sample identical params
(QMC samplers keep their seed: their sequence position already comes from the study).
Concurrent workers started together on one study should therefore get different seeds
(or none).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, QMCSampler
from optuna.storages import JournalStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial, TrialState

from cl_sweep.progress import report, sweep_progress

from ._budget import FINISHED_STATES, ask_within_budget
from ._pruning import make_pruner, prunes, publish, withdraw
from ._search_space import SearchSpace, build_search_space, default_study_name, describe_distribution, format_value
from ._storage import (
    HeartbeatThread,
    describe_storage,
    fail_stale_trials,
    make_storage,
    owner_tag,
)

log = logging.getLogger(__name__)

_DIRECTIONS = ("maximize", "minimize")
_KNOWN_SAMPLERS = (
    "optuna.samplers.TPESampler, optuna.samplers.RandomSampler, optuna.samplers.CmaEsSampler, "
    "optuna.samplers.QMCSampler, optuna.samplers.NSGAIISampler, optuna.samplers.NSGAIIISampler, "
    "optuna.samplers.GPSampler, optuna.samplers.GridSampler "
    "(or hydra/sweeper/sampler=tpe|random|cmaes|qmc|nsgaii|nsgaiii|gp|grid)"
)
# Samplers whose extra packages Optuna imports only when it first samples (a missing one would
# fail the second trial, not the sweep's start): checked before the study is opened.
_SAMPLER_NEEDS = {"CmaEsSampler": ("cmaes",), "GPSampler": ("torch", "scipy")}


# Trials whose parameters must all be in the requested space: they carry a value or will.
_VALUED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
# Trials that must hold every parameter of the requested space: they are done sampling. A
# RUNNING trial of another worker may be between two suggestions (x sampled, y not yet).
_FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def refuse(message: str) -> NoReturn:
    """Print ``cl_sweep: invalid Optuna sweep: <message> Nothing was run.`` to stderr and exit 2.

    The form of the trainer's config errors (``cl_sweep.cli``): one paragraph, and a
    ``SystemExit`` that passes through Hydra without a traceback.
    """
    text = message.strip()
    if not text.endswith("."):
        text += "."
    print(f"cl_sweep: invalid Optuna sweep: {text} Nothing was run.", file=sys.stderr)
    raise SystemExit(2)


def set_controller_hydra_config(config: DictConfig) -> None:
    """Make ``${hydra:...}`` resolve in the sweeper's process, as it does inside each job.

    Hydra sets ``HydraConfig`` only in ``run_job``, i.e. per job, so in a multirun the
    sweeper and the launcher read ``hydra.sweep.dir`` (a ``+search`` preset's
    ``multirun/optuna/${hydra:runtime.choices.benchmark}/...``) while it is unset and fail
    with "HydraConfig was not set" (Hydra's basic sweeper has the same gap, Hydra issues
    #1786 and #2247). Here it is set to the sweep-level config, which is what such
    interpolations mean outside a job; ``run_job`` puts it back after every job. A copy is
    registered because ``HydraConfig.set_config`` makes the ``hydra`` node of its argument
    read-only. A ``HydraConfig`` already set (by Hydra itself) is kept.
    """
    if not HydraConfig.initialized():
        HydraConfig.instance().set_config(copy.deepcopy(config))


def check_space_not_empty(space: SearchSpace, n_trials: int) -> None:
    """Raise a ValueError naming the ways to give a search space when ``space`` has none."""
    if space.distributions:
        return
    fixed = f" (the overrides {' '.join(space.fixed)} only fix values)" if space.fixed else ""
    raise ValueError(
        f"the search space is empty{fixed}, so all hydra.sweeper.n_trials={n_trials} trials would run the same "
        "job. Give it a space: a preset, +search=a6 or +search=a6_log (their space follows the chosen "
        "activation and optimizer), hydra.sweeper.params.<key>=<sweep> (e.g. "
        "hydra.sweeper.params.optimizer.learning_rate='tag(log, interval(1e-5,1e-3))'), or a sweep on the "
        "command line (e.g. optimizer.learning_rate=interval(1e-5,1e-3))"
    )


def space_mismatches(
    trials: Iterable[FrozenTrial], distributions: Mapping[str, BaseDistribution], *, extra_allowed: bool = False
) -> list[str]:
    """How the study's trials were sampled from another space than ``distributions`` (empty: same space).

    Trials without sampled parameters (told FAIL by the budget rule before sampling, or
    WAITING) are skipped, so a study without such trials has nothing to compare. A
    parameter both sides have must have the same distribution in every trial (Optuna's
    storages also refuse other categorical choices under a name already in the study). A
    parameter the trial has and this sweep lacks counts in COMPLETE, PRUNED and RUNNING
    trials; one this sweep has and the trial lacks counts in COMPLETE and PRUNED trials only:
    a RUNNING trial of another worker may be between two suggestions, and a FAIL trial
    carries no value and may have been abandoned part way (a plain ``study.ask()``).

    Args:
        trials: The study's trials.
        distributions: The requested space (``SearchSpace.distributions``).
        extra_allowed: Parameters the trials have beyond the space are a ``custom_search_space``'s
            (not known before it runs): they do not count.

    Returns:
        One sentence per differing parameter, naming the first trial where it differs.
    """
    found: dict[str, str] = {}
    for trial in trials:
        stored = trial.distributions
        if not stored:
            continue
        where = f"in its trials (trial {trial.number})"
        for name, dist in stored.items():
            requested = distributions.get(name)
            if requested is not None and dist != requested:
                found.setdefault(
                    name,
                    f"parameter {name} is {describe_distribution(dist)} {where} but "
                    f"{describe_distribution(requested)} in this sweep",
                )
            elif requested is None and trial.state in _VALUED_STATES and not extra_allowed:
                found.setdefault(
                    name, f"parameter {name} is {describe_distribution(dist)} {where} but not in this sweep"
                )
        if trial.state in _FINISHED_STATES:
            for name, requested in distributions.items():
                if name not in stored:
                    found.setdefault(
                        name, f"parameter {name} is not {where} but {describe_distribution(requested)} in this sweep"
                    )
    return list(found.values())


def _one_direction(direction: Any, where: str) -> str:
    if isinstance(direction, StudyDirection) and direction.name.lower() in _DIRECTIONS:
        return direction.name.lower()
    name = getattr(direction, "name", direction)  # upstream's Direction enum
    if isinstance(name, str) and name.lower() in _DIRECTIONS:
        return name.lower()
    raise ValueError(
        f"{where}={direction!r} is not supported; allowed: maximize or minimize, or a list of them "
        "(one per objective, e.g. [maximize, minimize])"
    )


def validate_direction(direction: Any) -> list[str]:
    """The directions, one per objective: ``maximize`` -> ``["maximize"]``; a list stays a list.

    Raises:
        ValueError: A value other than maximize/minimize, or an empty list.
    """
    if isinstance(direction, (list, tuple, ListConfig)):
        if not direction:
            raise ValueError("hydra.sweeper.direction=[] is empty; give one direction per objective (maximize or minimize)")
        return [_one_direction(d, f"hydra.sweeper.direction[{i}]") for i, d in enumerate(direction)]
    return [_one_direction(direction, "hydra.sweeper.direction")]


def task_objective(task_function: Any) -> Mapping[str, Any] | None:
    """What the task says a sweep of it optimises: its ``sweep_objective`` attribute, or None.

    An app declares it on the function under ``@hydra.main`` (cl_sweep's entry point does:
    ``{"metric": "final_accuracy_mean", "direction": "maximize", "metrics": [...]}``): ``direction``
    applies when ``hydra.sweeper.direction`` is not given, ``metrics`` are the names
    ``hydra.sweeper.objectives`` may use (checked before any trial).
    """
    declared = getattr(task_function, "sweep_objective", None)
    return declared if isinstance(declared, Mapping) else None


def resolve_objectives(
    direction: Any, objectives: Any, declared: Mapping[str, Any] | None
) -> tuple[list[str], list[str] | None, str]:
    """The study's directions, the named objectives (None: the job's return value) and where the directions came from.

    ``direction`` given: it is used (upstream's rule). Not given (null): the task's declared
    direction when the sweep optimises the task's declared metric, else upstream's default,
    minimize. With ``objectives`` of several keys and no ``direction``, refused: which way
    each key should go is the user's to say.

    Raises:
        ValueError: Bad directions, a direction list whose length differs from the objectives,
            or an objective the task does not declare.
    """
    names: list[str] | None = None
    if objectives is not None:
        if isinstance(objectives, str):
            objectives = [objectives]
        if not isinstance(objectives, (list, tuple, ListConfig)) or not objectives or not all(
            isinstance(o, str) and o for o in objectives
        ):
            raise ValueError(
                f"hydra.sweeper.objectives={objectives!r} is not allowed; expected null (the job's return value) "
                "or a list of metric names, e.g. [final_accuracy_mean, active_fraction_mean]"
            )
        names = list(objectives)
        allowed = list(declared.get("metrics") or ()) if declared else []
        unknown = [o for o in names if allowed and o not in allowed]
        if unknown:
            raise ValueError(
                f"hydra.sweeper.objectives names {', '.join(unknown)}, which no result of this task has; "
                f"allowed: {', '.join(allowed)}"
            )
    if direction is not None:
        directions, source = validate_direction(direction), "hydra.sweeper.direction"
    elif declared and declared.get("direction") and (names is None or names == [declared.get("metric")]):
        directions = validate_direction(declared["direction"])
        source = f"the task's declared objective ({declared.get('metric', 'its return value')})"
    elif names is not None and (len(names) > 1 or declared):
        raise ValueError(
            f"hydra.sweeper.objectives={names} but hydra.sweeper.direction is not given; give one direction per "
            f"objective, e.g. hydra.sweeper.direction=[{','.join(['maximize'] * len(names))}]"
        )
    else:
        directions, source = ["minimize"], "the default (upstream's: minimize)"
    n_objectives = len(names) if names is not None else None
    if n_objectives is not None and n_objectives != len(directions):
        raise ValueError(
            f"hydra.sweeper.direction has {len(directions)} direction(s) {directions} but "
            f"hydra.sweeper.objectives has {n_objectives} key(s) {names}; give one direction per objective"
        )
    return directions, names, source


def grid_choices(distributions: Mapping[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The grid of ``hydra/sweeper/sampler=grid``: every value of each (discrete) distribution.

    Raises:
        ValueError: A continuous distribution (an interval, a float range without step).
    """
    grid: dict[str, list[Any]] = {}
    for name, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            n = int(round((dist.high - dist.low) / dist.step)) + 1
            grid[name] = [dist.low + i * dist.step for i in range(n)]
        else:
            raise ValueError(
                f"hydra/sweeper/sampler=grid needs a discrete search space, but {name} is "
                f"{describe_distribution(dist)}; allowed: choice(...), a,b,..., range(...) or a stepped float"
            )
    return grid


def make_sampler(cfg: Any, *, seed_offset: int = 0, distributions: Mapping[str, BaseDistribution] | None = None) -> BaseSampler:
    """Instantiate ``hydra.sweeper.sampler``.

    Args:
        cfg: A ``_target_``-style node naming an ``optuna.samplers.BaseSampler`` subclass.
        seed_offset: Added to a non-null ``seed`` (see the module docstring).
        distributions: The search space; ``GridSampler`` takes its grid from it.

    Returns:
        The sampler.

    Raises:
        ValueError: The node has no target, the target is not importable or not a sampler,
            or the sampler rejects its arguments.
    """
    if cfg is None:
        return optuna.samplers.TPESampler()
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(node, dict)
    target = node.get("_target_")
    if not isinstance(target, str) or not target:
        raise ValueError(
            f"hydra.sweeper.sampler._target_={target!r} is missing; allowed: {_KNOWN_SAMPLERS}"
        )
    module_name, _, attr = target.rpartition(".")
    if attr == "MOTPESampler":
        raise ValueError(
            "hydra.sweeper.sampler: MOTPESampler was removed in Optuna 4.0; its multi-objective TPE is "
            "TPESampler now: use hydra/sweeper/sampler=tpe"
        )
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(
            f"hydra.sweeper.sampler._target_={target!r} cannot be imported ({type(e).__name__}: {e}); "
            f"allowed: {_KNOWN_SAMPLERS}"
        ) from e
    if not (isinstance(cls, type) and issubclass(cls, BaseSampler)):
        raise ValueError(
            f"hydra.sweeper.sampler._target_={target!r} is not an optuna.samplers.BaseSampler subclass; "
            f"allowed: {_KNOWN_SAMPLERS}"
        )
    missing = [m for m in _SAMPLER_NEEDS.get(cls.__name__, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f"hydra.sweeper.sampler ({target}) needs the package(s) {', '.join(missing)}, which are not "
            f"installed (pip install {' '.join(missing)}); nothing was run"
        )
    if node.get("seed") is not None and seed_offset and not issubclass(cls, QMCSampler):
        node["seed"] = int(node["seed"]) + seed_offset
    grid = grid_choices(distributions or {}) if issubclass(cls, optuna.samplers.GridSampler) else None
    try:
        if grid is not None:  # plain lists, not Hydra's containers
            sampler = cls(search_space=grid, **{k: v for k, v in node.items() if k != "_target_"})
        else:
            sampler = instantiate(node)
    except Exception as e:
        raise ValueError(f"hydra.sweeper.sampler ({target}) rejected its arguments {node}: {e}") from e
    return sampler


def _number(value: Any, what: str) -> tuple[float | None, str | None]:
    if value is None:
        return None, f"{what} is None"
    if isinstance(value, (str, bytes)):
        return None, f"{what} is a {type(value).__name__} ({value!r}), not a number"
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        return None, f"{what} is {type(value).__name__} {value!r}, not convertible to float ({e})"
    if not math.isfinite(number):
        return None, f"{what} is non-finite ({number}: a diverged run)"
    return number, None


def job_outcome(
    ret: JobReturn, objectives: Sequence[str] | None = None, n_values: int = 1
) -> tuple[list[float] | None, str | None]:
    """Turn one job's return into ``(values, None)`` or ``(None, reason it failed)``.

    ``objectives`` given: each is looked up by name in the return value when it is a mapping,
    else in its ``metrics`` mapping (cl_sweep's jobs return a float that carries its result's
    metrics: :class:`cl_sweep.results.Objective`). Not given: the return value itself, a number
    for one direction, a sequence of ``n_values`` numbers for several (upstream's rule).
    """
    if ret.status != JobStatus.COMPLETED:
        err = ret._return_value
        return None, f"job raised {type(err).__name__}: {err}"
    value = ret._return_value
    if objectives is not None:
        metrics = value if isinstance(value, Mapping) else getattr(value, "metrics", None)
        if not isinstance(metrics, Mapping):
            return None, (
                f"job returned {type(value).__name__} {value!r}, which has no named metrics for "
                f"hydra.sweeper.objectives={list(objectives)} (return a mapping of them)"
            )
        values = []
        for key in objectives:
            if key not in metrics:
                return None, f"the job's metrics have no {key!r} (hydra.sweeper.objectives); they have: {', '.join(map(str, metrics))}"
            number, why = _number(metrics[key], f"metric {key!r}")
            if why:
                return None, why
            values.append(number)
        return values, None
    if isinstance(value, Mapping):
        return None, f"job returned a mapping ({', '.join(map(str, value))}); name the objective(s) with hydra.sweeper.objectives"
    if n_values == 1:
        number, why = _number(value, "the job's return value")
        return (None, why) if why else ([number], None)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return None, f"job returned {type(value).__name__} {value!r}, not a list or tuple of {n_values} numbers (one per direction)"
    if len(value) != n_values:
        return None, f"job returned {len(value)} value(s) {list(value)!r} for {n_values} directions"
    values = []
    for i, v in enumerate(value):
        number, why = _number(v, f"value {i} of the job's return")
        if why:
            return None, why
        values.append(number)
    return values, None


def load_extender(path: str | None) -> Callable[[DictConfig, Trial], None] | None:
    """``hydra.sweeper.custom_search_space``: the callable ``(cfg, trial) -> None`` it names, or None.

    Raises:
        ValueError: The dotpath does not import or is not callable.
    """
    if path is None:
        return None
    if not isinstance(path, str) or not path:
        raise ValueError(f"hydra.sweeper.custom_search_space={path!r} is not allowed; expected null or a dotpath, e.g. my_module.configure")
    try:
        fn = get_method(path)
    except Exception as e:  # Hydra's _locate raises ImportError or ValueError with the reason
        raise ValueError(
            f"hydra.sweeper.custom_search_space={path!r} cannot be imported ({type(e).__name__}: {e}); expected "
            "the dotpath of a function (cfg, trial) -> None on the Python path (a script's own folder counts)"
        ) from e
    return fn


class OptunaSweeperImpl(Sweeper):
    """The sweep logic behind ``hydra/sweeper=optuna`` (imported lazily by the plugin)."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        params: Mapping[str, Any] | None,
        heartbeat_interval: int | None,
        grace_period: int | None,
        space: Mapping[str, Any] | None = None,
        max_failure_rate: float = 1.0,
        objectives: Any = None,
        custom_search_space: str | None = None,
        pruner: Any = None,
    ) -> None:
        """Store the config; validation happens in :meth:`sweep` so errors surface unwrapped."""
        self.pruner_cfg = pruner
        self.sampler_cfg = sampler
        self.direction = direction
        self.storage_url = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.params = params
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.space = space
        self.max_failure_rate = max_failure_rate
        self.objectives_cfg = objectives
        self.custom_search_space = custom_search_space
        self.objectives: list[str] | None = None
        self.directions: list[str] = []
        self.extender: Callable[[DictConfig, Trial], None] | None = None
        self.declared: Mapping[str, Any] | None = None
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Set ``HydraConfig`` for this process, create the launcher (Hydra calls this once, before :meth:`sweep`)."""
        self.config = config
        self.hydra_context = hydra_context
        self.declared = task_objective(task_function)
        set_controller_hydra_config(config)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def _validate(self) -> str:
        """Check the keys; sets the directions, the named objectives and the search-space extender."""
        self.directions, self.objectives, source = resolve_objectives(self.direction, self.objectives_cfg, self.declared)
        self.extender = load_extender(self.custom_search_space)
        rate = self.max_failure_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"hydra.sweeper.max_failure_rate={rate!r} is not allowed; expected a number from 0.0 to 1.0")
        for key in ("n_trials", "n_jobs"):
            value = getattr(self, key)
            low = 0 if key == "n_trials" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"hydra.sweeper.{key}={value!r} is not allowed; expected an integer >= {low}")
        for key in ("heartbeat_interval", "grace_period"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"hydra.sweeper.{key}={value!r} is not allowed; expected null or an integer > 0")
        return source

    def _open_study(self, space: SearchSpace) -> tuple[optuna.Study, Any]:
        assert self.config is not None
        storage = make_storage(
            self.storage_url, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period
        )
        name = self.study_name or self._default_name(space, storage)
        # Placeholder sampler: the real one is seeded from the study's trial count below.
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(),
            pruner=make_pruner(self.pruner_cfg),
            directions=self.directions,
            load_if_exists=True,
        )
        stored = [d.name.lower() for d in study.directions]
        if stored != self.directions:
            raise ValueError(
                f"hydra.sweeper.direction={self.directions} but study {name!r} in {describe_storage(self.storage_url)} "
                f"was created with direction {stored}; use another study_name"
            )
        if self.objectives is not None and study.user_attrs.get("objectives", self.objectives) != self.objectives:
            raise ValueError(
                f"hydra.sweeper.objectives={self.objectives} but study {name!r} in {describe_storage(self.storage_url)} "
                f"optimises {study.user_attrs['objectives']}; use another study_name"
            )
        attrs = study.user_attrs
        if "search_space" not in attrs:
            study.set_user_attr("search_space", space.to_json())
            study.set_user_attr("fixed_overrides", sorted(space.fixed_canonical))
            if self.objectives is not None:
                study.set_user_attr("objectives", self.objectives)
            if self.custom_search_space:
                study.set_user_attr("custom_search_space", self.custom_search_space)
        return study, storage

    def _default_name(self, space: SearchSpace, storage: Any) -> str:
        """The study's default name, without the task's declared ``run_control`` keys (they change no
        number, so toggling one resumes the study). A study made before they left the name is found
        under its old name when the storage has that one and not the new one."""
        assert self.config is not None
        job, extra = str(self.config.hydra.job.name), self._name_extra()
        ignored = [str(k) for k in (self.declared or {}).get("run_control", ())]
        name = default_study_name(job, space, extra=extra, ignore=ignored)
        legacy = default_study_name(job, space, extra=extra)
        if legacy != name:
            existing = set(optuna.study.get_all_study_names(storage))
            if name not in existing and legacy in existing:
                log.info(f"Resuming study {legacy!r}, named before run-control keys ({', '.join(sorted(ignored))}) left study names")
                return legacy
        return name

    def _name_extra(self) -> list[str]:
        """What besides the space tells studies apart in the default name: objectives, directions, extender."""
        extra = []
        if self.objectives is not None:
            extra.append(f"objectives={','.join(self.objectives)}")
        if len(self.directions) > 1 or self.objectives is not None:
            extra.append(f"direction={','.join(self.directions)}")
        if self.custom_search_space:
            extra.append(f"custom_search_space={self.custom_search_space}")
        return extra

    def _counts(self, study: optuna.Study) -> tuple[int, int]:
        """Finished (COMPLETE or PRUNED) and RUNNING trials."""
        states = [t.state for t in study.get_trials(deepcopy=False, states=(*FINISHED_STATES, TrialState.RUNNING))]
        return len(states) - states.count(TrialState.RUNNING), states.count(TrialState.RUNNING)

    def _heartbeat_grace(self, storage: Any) -> float | None:
        """Grace period of our own heartbeat: journal storages with ``heartbeat_interval`` only."""
        if not isinstance(storage, JournalStorage) or self.heartbeat_interval is None:
            return None
        return float(self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval)

    def _ask_batch(
        self, study: optuna.Study, space: SearchSpace, size: int, heartbeat_grace: float | None
    ) -> tuple[list[tuple[Trial, list[str]]], str]:
        """Ask up to ``size`` trials under the budget rule; the reason is set when it said stop."""
        batch: list[tuple[Trial, list[str]]] = []
        owner = owner_tag()
        while len(batch) < size:
            trial, why = ask_within_budget(
                study,
                self.n_trials,
                space.distributions,
                owner=owner,
                own_live_numbers=[t.number for t, _ in batch],
                heartbeat_grace=heartbeat_grace,
            )
            if trial is None:
                return batch, why
            overrides = space.overrides_for(trial.params)
            if self.extender is not None:
                overrides += self._extend(study, trial, space)
            trial.set_user_attr("overrides", overrides)
            batch.append((trial, overrides))
        return batch, ""

    def _extend(self, study: optuna.Study, trial: Trial, space: SearchSpace) -> list[str]:
        """Run ``custom_search_space`` on a sampled trial; the overrides of the parameters it suggested.

        As upstream: it is called with the sweep's config and the trial after the space's own
        parameters are sampled, and each parameter it suggests becomes ``name=value`` (``+w``
        for a key the config lacks). One that raises stops the sweep: its trial is told FAIL.
        """
        assert self.config is not None and self.extender is not None
        try:
            self.extender(self.config, trial)
        except Exception as e:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            refuse(
                f"hydra.sweeper.custom_search_space={self.custom_search_space} raised {type(e).__name__}: {e} "
                f"(trial {trial.number}, told FAIL)"
            )
        return [f"{name}={format_value(value)}" for name, value in trial.params.items() if name not in space.distributions]

    def _tell(self, study: optuna.Study, trial: Trial, ret: JobReturn) -> bool:
        """Tell one job's outcome; True when the trial failed."""
        values, reason = job_outcome(ret, self.objectives, len(self.directions))
        try:
            if ret.status == JobStatus.COMPLETED and getattr(ret._return_value, "pruned", False):
                # Optuna keeps the last reported intermediate value as the PRUNED trial's value.
                log.info(f"Trial {trial.number} PRUNED at a task boundary (its result says pruned)")
                study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
                return False
            if values is None:
                log.warning(f"Trial {trial.number} FAIL: {reason}")
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            else:
                study.tell(trial, values, skip_if_finished=True)
        except RuntimeError as e:
            # GridSampler calls study.stop() once its grid is covered, which Optuna refuses outside
            # study.optimize; the trial is told by then (upstream ignores it the same way).
            if "Study.stop" not in str(e):
                raise
        return values is None

    def _launch(
        self, study: optuna.Study, storage: Any, batch: list[tuple[Trial, list[str]]], heartbeat_grace: float | None
    ) -> int:
        """Run the batch's jobs and tell their results (returns how many failed); job.num is the trial number.

        With concurrent workers a batch's trial numbers can have gaps (another worker got
        the numbers in between); each run of consecutive numbers is then launched on its
        own, so two workers sharing a sweep dir never write the same job dir.
        """
        assert self.launcher is not None
        runs: list[list[tuple[Trial, list[str]]]] = []
        for item in batch:
            if runs and item[0].number == runs[-1][-1][0].number + 1:
                runs[-1].append(item)
            else:
                runs.append([item])
        interval = self.heartbeat_interval if heartbeat_grace is not None else None
        told = failed = 0
        try:
            self.validate_batch_is_legal([ov for _, ov in batch])
            # Trial._trial_id: the storage id the heartbeat API needs (no public accessor).
            with HeartbeatThread(storage, [t._trial_id for t, _ in batch], interval=interval):
                for run in runs:
                    returns = self.launcher.launch([ov for _, ov in run], initial_job_idx=run[0][0].number)
                    for (trial, _), ret in zip(run, returns, strict=True):
                        bad = self._tell(study, trial, ret)
                        report(ret, failed=bad)
                        failed += bad
                        told += 1
        except BaseException:
            # Ctrl-C or a broken config: do not leave the batch RUNNING in the storage.
            for trial, _ in batch[told:]:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        return failed

    def _params_with_space(self, arguments: list[str]) -> dict[str, Any]:
        """``params`` plus the ``space`` entries of the group options this sweep composes with."""
        assert self.config is not None
        space = OmegaConf.to_container(self.space) if isinstance(self.space, DictConfig) else dict(self.space or {})
        choices = self.config.hydra.runtime.choices
        merged: dict[str, Any] = {}
        for group, per_option in space.items():
            option = choices.get(group)
            if option is None:
                continue
            if option not in per_option:
                raise ValueError(
                    f"hydra.sweeper.space has no search space for {group}={option}; "
                    f"allowed: {', '.join(sorted(per_option))}"
                )
            for key, expr in (per_option[option] or {}).items():
                merged[f"{group}.{key}"] = expr
        params = OmegaConf.to_container(self.params) if isinstance(self.params, DictConfig) else dict(self.params or {})
        merged.update(params)
        return merged

    def sweep(self, arguments: list[str]) -> None:
        """Run the study up to ``n_trials`` COMPLETE trials (see the module docstring).

        Args:
            arguments: Task overrides from the command line; sweeps join the search space,
                plain overrides are passed to every job unchanged.
        """
        assert self.config is not None
        try:
            source = self._validate()
            space = build_search_space(self._params_with_space(arguments), arguments)
            if self.extender is None:  # an extender may be the whole space
                check_space_not_empty(space, self.n_trials)
            make_sampler(self.sampler_cfg, distributions=space.distributions)  # fail on a bad sampler before touching the storage
            make_pruner(self.pruner_cfg)  # and on a bad pruner
            study, storage = self._open_study(space)
        except ValueError as e:  # a bad hydra.sweeper value or search space: one paragraph, no traceback
            refuse(str(e))
        n_existing = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(self.sampler_cfg, seed_offset=n_existing, distributions=space.distributions)
        if isinstance(study.sampler, optuna.samplers.GridSampler):
            size = math.prod(len(v) for v in grid_choices(space.distributions).values())
            if self.n_trials > size:
                log.info(f"GridSampler: n_trials={self.n_trials} lowered to the grid's {size} points")
                self.n_trials = size
        # job.num is the trial number (see _launch): a resumed run, or another worker, in the
        # same sweep dir never overwrites a job dir.

        where = f"study {study.study_name!r} in {describe_storage(self.storage_url)}"
        log.info(f"Optuna sweep: {where}")
        direction = self.directions[0] if len(self.directions) == 1 else self.directions
        what = f" of {', '.join(self.objectives)}" if self.objectives else ""
        log.info(f"Sampler: {type(study.sampler).__name__}, direction{what}: {direction} (from {source}), n_trials: {self.n_trials}")
        log.info(f"Search space: {space.distributions}")

        if prunes(self.pruner_cfg):
            log.info(f"Pruner: {type(study.pruner).__name__}; jobs report their accuracy after every task")
            publish(str(self.config.hydra.sweep.dir), self.storage_url, study)
        try:
            self._run(study, storage, space, where)
        finally:
            withdraw(str(self.config.hydra.sweep.dir))

    def _run(self, study: optuna.Study, storage: Any, space: SearchSpace, where: str) -> None:
        """Ask, launch and tell batches until the budget is used (see the module docstring)."""
        heartbeat_grace = self._heartbeat_grace(storage)
        fail_stale_trials(study, heartbeat_grace=heartbeat_grace)
        self._check_stored_space(study, space, where)
        complete, running = self._counts(study)
        # At most this many launches in this run: failures are replaced by the next run, not this one.
        cap = self.n_trials - complete - running
        if complete >= self.n_trials:
            log.info(f"Study already complete: {complete} COMPLETE or PRUNED trial(s) >= n_trials={self.n_trials}; nothing to run")
        elif cap <= 0:
            log.info(f"{complete} COMPLETE and {running} RUNNING elsewhere cover n_trials={self.n_trials}; nothing to run")
        else:
            others = f" ({running} RUNNING elsewhere)" if running else ""
            log.info(f"{complete} COMPLETE or PRUNED trial(s) in the study{others}; running up to {cap} more")

        launched = 0
        # the sweep's line counts trials towards n_trials, those finished before this run as done
        with sweep_progress(self.n_trials, self.config, unit="trials", done=complete, prunes=prunes(self.pruner_cfg)):
            while launched < cap:
                batch, stop_reason = self._ask_batch(study, space, min(self.n_jobs, cap - launched), heartbeat_grace)
                if batch:
                    failed = self._launch(study, storage, batch, heartbeat_grace)
                    launched += len(batch)
                    if failed / len(batch) > self.max_failure_rate:
                        self._report(study, where)
                        refuse(
                            f"{failed} of the {len(batch)} trials of the last batch failed (reasons above), more than "
                            f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: the sweep stopped. Every finished "
                            "trial is in the study; re-running the same command resumes it"
                        )
                if stop_reason:
                    log.info(f"Budget reached, no more asks: {stop_reason}")
                    break

        self._report(study, where)

    def _check_stored_space(self, study: optuna.Study, space: SearchSpace, where: str) -> None:
        """Refuse to resume a study whose trials were sampled from another space (see :func:`space_mismatches`)."""
        mismatches = space_mismatches(
            study.get_trials(deepcopy=False), space.distributions, extra_allowed=self.extender is not None
        )
        if mismatches:
            refuse(
                f"{where} was sampled from another search space: {'; '.join(mismatches)}. A study keeps one "
                "search space: to search this one, start a new study with another hydra.sweeper.study_name (or "
                "leave it unset: the default name is derived from the search space) or another "
                "hydra.sweeper.storage; to resume this study, give it its own search space again"
            )

    def _report(self, study: optuna.Study, where: str) -> None:
        assert self.config is not None
        complete, running = self._counts(study)
        n_pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
        if complete + running < self.n_trials:
            log.warning(
                f"Study holds {complete} COMPLETE or PRUNED trial(s) < n_trials={self.n_trials} (some failed); "
                "run the same command again to fill it up"
            )
        elif complete < self.n_trials:
            log.info(f"{running} trial(s) still RUNNING in other workers will complete the study")
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": describe_storage(self.storage_url),
            "n_complete": complete - n_pruned,
            "n_pruned": n_pruned,
            "best_params": None,
            "best_value": None,
        }
        if complete and len(self.directions) > 1:
            # upstream's form for several objectives: the Pareto front, one entry per trial on it
            front = study.best_trials
            del results["best_params"], results["best_value"]
            results["directions"] = list(self.directions)
            if self.objectives is not None:
                results["objectives"] = list(self.objectives)
            results["solutions"] = [{"params": t.params, "values": list(t.values), "trial": t.number} for t in front]
            log.info(f"Pareto front: {len(front)} trial(s)")
            for t in front:
                log.info(f"    values {list(t.values)} (trial {t.number}): {t.params}")
        elif complete > n_pruned:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            log.info(f"Best value: {best.value} (trial {best.number})")
            log.info(f"Best parameters: {best.params}")
        else:
            log.warning("No COMPLETE trial in the study; no best value")
        log.info(f"Results in {where} ({complete - n_pruned} COMPLETE, {n_pruned} PRUNED trial(s))")
        sweep_dir = str(self.config.hydra.sweep.dir)
        os.makedirs(sweep_dir, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), os.path.join(sweep_dir, "optimization_results.yaml"))

