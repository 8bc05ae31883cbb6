"""The exact trial budget of a study shared by concurrent sweepers (see ``_impl``'s docstring).

Every storage numbers a study's trials atomically (RDB: under a row lock on the study;
journal: by the order of the log; in-memory: under a lock), so trial numbers order the
asks of all workers. A just-asked trial ``k`` may run only while fewer than ``n_trials``
trials numbered below ``k`` are COMPLETE, PRUNED or RUNNING (and not stale). Otherwise it is
told FAIL with the user attribute ``budget_exceeded=True`` before any parameter is
sampled, and its worker stops asking.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from ._storage import (
    HEARTBEAT_ATTR,
    OWNER_ATTR,
    fail_stale_trials,
    heartbeat_enabled,
    quiet_heartbeat_warning,
    stale_reason,
)

log = logging.getLogger(__name__)

BUDGET_ATTR = "budget_exceeded"
#: Trials that used their slot of the budget for good: a PRUNED trial counts like a COMPLETE one.
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def held_trials(
    trials: Iterable[FrozenTrial],
    *,
    below: int | None = None,
    is_stale: Callable[[FrozenTrial], bool] = lambda t: False,
) -> int:
    """Count the trials that hold a slot of the budget: COMPLETE or PRUNED, or RUNNING and not stale.

    Args:
        trials: The study's trials (any states).
        below: Count only trials numbered below this; None counts all.
        is_stale: Whether a RUNNING trial's process is known to be gone.
    """
    return sum(
        1
        for t in trials
        if (below is None or t.number < below)
        and (t.state in FINISHED_STATES or (t.state == TrialState.RUNNING and not is_stale(t)))
    )


def budget_allows(
    trials: Iterable[FrozenTrial],
    number: int,
    n_trials: int,
    *,
    is_stale: Callable[[FrozenTrial], bool] = lambda t: False,
) -> bool:
    """The budget rule: may trial ``number`` run in a study that should hold ``n_trials`` COMPLETE trials?

    True iff fewer than ``n_trials`` trials numbered below ``number`` are COMPLETE or
    RUNNING (RUNNING ones only when ``is_stale`` is False for them). Trials still undecided
    (asked by another worker, not yet checked) count as RUNNING, so the rule errs towards
    stopping; as long as no trial fails, concurrent workers end with exactly ``n_trials``
    COMPLETE trials (every trial that was counted against a denied one goes on to run).
    """
    return held_trials(trials, below=number, is_stale=is_stale) < n_trials


def ask_tagged(
    study: optuna.Study,
    user_attrs: Mapping[str, Any],
    system_attrs: Mapping[str, Any] | None = None,
) -> Trial:
    """``study.ask()`` whose new trial carries ``user_attrs`` from the moment it exists.

    Another sweeper failing "untagged RUNNING trials" (see ``_storage.stale_reason``) can then
    never catch a trial between its creation and its tagging. The trial is created in one
    storage operation from a RUNNING template (the same path as ``study.add_trial``), then
    wrapped like ``study.ask`` does; no parameter is sampled yet. Falls back to
    ``study.ask()`` + ``set_user_attr`` when the study has WAITING (enqueued) trials, so
    Optuna's queue keeps working.
    """
    storage = study._storage  # the study's (possibly cached) storage, as Trial itself uses
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        with quiet_heartbeat_warning():
            trial = study.ask()
        for key, value in user_attrs.items():
            trial.set_user_attr(key, value)
        for key, value in (system_attrs or {}).items():
            storage.set_trial_system_attr(trial._trial_id, key, value)
        return trial
    template = FrozenTrial(
        number=-1,  # assigned by the storage
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs=dict(user_attrs),
        system_attrs=dict(system_attrs or {}),
        intermediate_values={},
        trial_id=-1,  # assigned by the storage
    )
    trial_id = storage.create_new_trial(study._study_id, template_trial=template)
    if heartbeat_enabled(storage):
        # From now on a dead host's trial goes stale after the grace period, even if it never launched.
        storage.record_heartbeat(trial_id)
    # As in study.ask: the sampler must see the storage as it is now, not a cached list.
    if hasattr(study, "_thread_local"):
        study._thread_local.cached_all_trials = None
    return Trial(study, trial_id)


def suggest_all(trial: Trial, distributions: Mapping[str, BaseDistribution]) -> None:
    """Sample every parameter of ``distributions`` (as ``study.ask(fixed_distributions)`` does)."""
    for name, dist in distributions.items():
        if isinstance(dist, FloatDistribution):
            trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        else:  # pragma: no cover - build_search_space makes only the three above
            raise TypeError(f"unsupported distribution for {name}: {dist!r}")


def ask_within_budget(
    study: optuna.Study,
    n_trials: int,
    distributions: Mapping[str, BaseDistribution],
    *,
    owner: Mapping[str, Any],
    own_live_numbers: Collection[int] = (),
    heartbeat_grace: float | None = None,
) -> tuple[Trial | None, str]:
    """Ask one trial if the budget allows it (checked before and after the ask).

    Args:
        study: The study.
        n_trials: COMPLETE trials the study should end with.
        distributions: The search space; sampled only for a trial that may run.
        owner: The ``OWNER_ATTR`` tag of this process.
        own_live_numbers: Trials this process is about to launch (earlier in the batch).
        heartbeat_grace: Journal heartbeat grace (seconds), or None when there is none.

    Returns:
        ``(trial, "")`` for a trial to launch, with its parameters sampled, or
        ``(None, why)`` when the budget is used up: stop asking.
    """

    def is_stale(t: FrozenTrial) -> bool:
        return stale_reason(t, own_live_numbers=own_live_numbers, heartbeat_grace=heartbeat_grace) is not None

    fail_stale_trials(study, own_live_numbers=own_live_numbers, heartbeat_grace=heartbeat_grace)
    held = held_trials(study.get_trials(deepcopy=False), is_stale=is_stale)
    if held >= n_trials:
        return None, f"{held} trial(s) COMPLETE or RUNNING cover n_trials={n_trials}"

    system_attrs = {HEARTBEAT_ATTR: time.time()} if heartbeat_grace is not None else None
    trial = ask_tagged(study, {OWNER_ATTR: dict(owner)}, system_attrs)
    trials = study.get_trials(deepcopy=False)
    if not budget_allows(trials, trial.number, n_trials, is_stale=is_stale):
        held = held_trials(trials, below=trial.number, is_stale=is_stale)
        try:
            trial.set_user_attr(BUDGET_ATTR, True)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # already finished by someone else: nothing to mark
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        why = (
            f"trial {trial.number} not run: {held} lower-numbered trial(s) COMPLETE or RUNNING "
            f"(other workers) cover n_trials={n_trials}; marked FAIL with {BUDGET_ATTR}=True"
        )
        return None, why
    try:
        suggest_all(trial, distributions)
    except BaseException:
        # A sampler that fails (a missing package, a bug): the trial must not stay RUNNING.
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    return trial, ""
