"""Pruning at task boundaries: the pruner, and the channel from a running job to its trial.

The sweeper launches trial ``k`` as the launcher's job number ``k`` (``_impl._launch``), so a
job finds its trial from its own Hydra config: ``hydra.job.num`` is the trial number and
``hydra.sweep.dir`` holds :data:`LINK_FILE`, which names the study (storage URL and study
name). Nothing is added to the job's overrides, so its result file's ``overrides`` and
``hyperparameters`` stay what identifies it (resume, tables). A job in the sweeper's own
process (the basic and population launchers) uses the sweeper's live study object
(:data:`_LIVE`, which also serves an in-memory storage); a job in another process (joblib, a
cluster) opens the study from its storage with the pruner of its own ``hydra.sweeper.pruner``.

After each task the job reports its running accuracy, the mean over the non-diverged seeds
of the job's call of ``overall_accuracy`` after that task (``validation_overall`` when the
benchmark holds examples out: the study then never sees test accuracy; NaN when all diverged), with step =
the task index, and asks ``should_prune``. Each step is reported once: a job whose seeds are
trained in several sequential calls (a CPU's population cap) reports from its first call
only, so it can be pruned only there; a pruned job trains none of its later seeds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from optuna.pruners import BasePruner, NopPruner
from optuna.trial import Trial, TrialState

log = logging.getLogger(__name__)

#: In the sweep dir: ``{"storage": url or null, "study_name": name}`` of the study its jobs report to.
LINK_FILE = ".optuna_study.json"
PRUNERS = "none, median, successive_halving, hyperband, wilcoxon (hydra/sweeper/pruner=<name>)"
# sweep dir (absolute) -> the sweeper's study, for jobs in the sweeper's process
_LIVE: dict[str, optuna.Study] = {}


def make_pruner(cfg: Any) -> BasePruner:
    """Build ``hydra.sweeper.pruner`` (its keys are the Optuna constructor's keyword arguments).

    Raises:
        ValueError: No or an unknown target, or the pruner refuses its arguments (e.g.
            ``n_startup_trials=-1``); the message names the value and what is allowed.
    """
    if cfg is None:
        return NopPruner()
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    target = node.pop("_target_", None)
    module_name, _, attr = str(target or "").rpartition(".")
    cls = getattr(optuna.pruners, attr, None) if module_name == "optuna.pruners" else None
    if not (isinstance(cls, type) and issubclass(cls, BasePruner)):
        raise ValueError(f"hydra.sweeper.pruner._target_={target!r} is not an Optuna pruner; allowed: {PRUNERS}")
    try:
        return cls(**node)
    except (TypeError, ValueError) as e:
        keys = ", ".join(f"{k}={v!r}" for k, v in node.items()) or "no arguments"
        raise ValueError(f"hydra.sweeper.pruner ({attr}) refused {keys}: {e}") from None


def prunes(cfg: Any) -> bool:
    """Whether a sweep with this ``hydra.sweeper.pruner`` node prunes anything (not none/NopPruner)."""
    return cfg is not None and not str(cfg.get("_target_", "")).endswith(".NopPruner")


def publish(sweep_dir: str, storage_url: str | None, study: optuna.Study) -> None:
    """Let the sweep's jobs find ``study``: :data:`LINK_FILE` in ``sweep_dir`` (atomic) and the live object."""
    folder = Path(sweep_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".optuna_study.", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump({"storage": storage_url, "study_name": study.study_name}, f)
    os.replace(tmp, folder / LINK_FILE)
    _LIVE[str(folder)] = study


def withdraw(sweep_dir: str) -> None:
    """The sweep is over: its jobs in this process no longer report to the live study."""
    _LIVE.pop(str(Path(sweep_dir).resolve()), None)


class TrialReporter:
    """One job's link to its trial: hears the job's task ends, reports, says whether to prune."""

    def __init__(self, trial: Trial) -> None:
        self.trial = trial
        self.reported: set[int] = set()

    @property
    def number(self) -> int:
        return self.trial.number

    def __call__(self, event: Any) -> bool:
        """Report the job's running accuracy after ``event.task``; True: prune the job here."""
        if event.task in self.reported:  # a later call of the same job: its first call decided
            return False
        self.reported.add(event.task)
        ok = ~np.asarray(event.diverged, bool)
        # With held-out examples the validation accuracy, as the job's final value: test accuracy never steers the study.
        running = getattr(event, "validation_overall", None)
        running = event.overall_accuracy if running is None else running
        value = float(np.mean(running[ok, event.task])) if ok.any() else math.nan
        self.trial.report(value, event.task)
        pruned = self.trial.should_prune()
        if pruned:
            log.info(f"trial {self.trial.number} pruned after task {event.task + 1}/{event.num_tasks} (accuracy {value:.4f})")
        return pruned


def job_reporter(hydra_config: Any) -> TrialReporter | None:
    """The reporter of the job whose Hydra config is ``hydra_config`` (None: no pruning, or no trial found)."""
    pruner_cfg = hydra_config.sweeper.get("pruner")
    if not prunes(pruner_cfg):
        return None
    if hydra_config.get("mode") != RunMode.MULTIRUN:
        return None  # a single run (a search's trial re-run from its overrides) belongs to no study
    folder = Path(str(hydra_config.sweep.dir)).resolve()
    number = int(hydra_config.job.num)
    study = _LIVE.get(str(folder))
    if study is None:
        try:
            link = json.loads((folder / LINK_FILE).read_text())
        except (OSError, ValueError) as e:
            log.warning(f"job {number}: no study to report to ({folder / LINK_FILE}: {e}); it is not pruned")
            return None
        if link.get("storage") is None:
            log.warning(f"job {number}: the study is in the sweeper's memory (hydra.sweeper.storage=null), out of "
                        "this process's reach; it is not pruned (use a storage file to prune across processes)")
            return None
        from ._storage import make_storage

        study = optuna.load_study(study_name=link["study_name"], storage=make_storage(link["storage"]),
                                  pruner=make_pruner(pruner_cfg))
    try:
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    except KeyError:
        log.warning(f"job {number}: study {study.study_name!r} has no trial {number}; it is not pruned")
        return None
    frozen = study._storage.get_trial(trial_id)
    task = list(hydra_config.overrides.task)
    if frozen.state != TrialState.RUNNING or sorted(frozen.user_attrs.get("overrides", [])) != sorted(task):
        # a launcher that numbers jobs otherwise: better no pruning than another trial's
        log.warning(f"job {number} is not trial {number} of study {study.study_name!r} (state {frozen.state.name}, "
                    f"overrides {frozen.user_attrs.get('overrides')}); it is not pruned")
        return None
    return TrialReporter(Trial(study, trial_id))
