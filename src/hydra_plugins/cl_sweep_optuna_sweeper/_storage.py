"""Optuna storage construction, trial ownership tags and stale-trial failing."""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

log = logging.getLogger(__name__)

JOURNAL_SCHEME = "journal://"
OWNER_ATTR = "sweeper_owner"
_STORAGE_HELP = (
    "expected null (in-memory, no resume), an SQLAlchemy URL such as "
    "'sqlite:////abs/path/optuna.sqlite3' or 'postgresql://user@host/db', "
    "or 'journal:///abs/path/file.log'"
)


def make_storage(
    url: str | None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
) -> BaseStorage | None:
    """Build the Optuna storage named by ``hydra.sweeper.storage``.

    Args:
        url: ``None`` (in-memory), ``journal://<path>`` (a ``JournalStorage`` on a
            ``JournalFileBackend``, for studies shared over a network filesystem) or any
            SQLAlchemy URL (an ``RDBStorage``). Parent directories of SQLite and journal
            files are created.
        heartbeat_interval: Seconds between heartbeats of running trials; RDB only,
            ``None`` disables the heartbeat.
        grace_period: Seconds without heartbeat before a running trial is stale; ``None``
            is Optuna's default (twice the interval).

    Returns:
        The storage, or ``None`` for an in-memory study.

    Raises:
        ValueError: ``url`` is not one of the accepted forms.
    """
    if url is None:
        return None
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"hydra.sweeper.storage={url!r} is not a storage: {_STORAGE_HELP}")
    if url.startswith(JOURNAL_SCHEME):
        path = url[len(JOURNAL_SCHEME) :]
        if not path:
            raise ValueError(f"hydra.sweeper.storage={url!r} has no file path: {_STORAGE_HELP}")
        path = os.path.abspath(os.path.expanduser(path))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    if "://" not in url:
        raise ValueError(f"hydra.sweeper.storage={url!r} is not a URL: {_STORAGE_HELP}")
    if url.startswith("sqlite"):
        import sqlalchemy

        database = sqlalchemy.engine.make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    with warnings.catch_warnings():
        # heartbeat_interval is "experimental" in Optuna but has been stable since 2.x.
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)


def describe_storage(url: str | None) -> str:
    """Return ``url`` safe for logs and result files (database password hidden)."""
    if url is None:
        return "in-memory"
    if url.startswith(JOURNAL_SCHEME) or "://" not in url:
        return url
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL fails later with a clearer error
        return url


def owner_tag() -> dict[str, Any]:
    """Return the ownership tag stored on every trial this process asks."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists but belongs to someone else
        return True
    return True


def _heartbeat_enabled(storage: Any) -> bool:
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    return interval is not None and hasattr(storage, "record_heartbeat")


def fail_stale_trials(study: optuna.Study, *, own_live_numbers: Collection[int] = ()) -> list[int]:
    """Mark RUNNING trials whose process is gone as FAIL.

    Two rules, applied in order:

    1. Heartbeat (RDB storages with ``heartbeat_interval``): Optuna's
       ``fail_stale_trials`` fails trials whose last heartbeat is older than the grace
       period, whichever host ran them.
    2. Ownership: a RUNNING trial is failed when it has no owner tag (it was not asked by
       this sweeper, e.g. an abandoned ``study.ask()``), or its owner is a process on this
       host that no longer exists (or this very process, for trials it does not hold).
       Trials owned by live processes, or by processes on other hosts, are left alone:
       on other hosts only the heartbeat can tell.

    Args:
        study: The study.
        own_live_numbers: Numbers of trials this process is running right now.

    Returns:
        Numbers of the trials that were failed.
    """
    running_before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running_before:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    failed = sorted(running_before - {t.number for t in running})

    host, pid = socket.gethostname(), os.getpid()
    for trial in running:
        if trial.number in own_live_numbers:
            continue
        owner = trial.user_attrs.get(OWNER_ATTR)
        if isinstance(owner, dict):
            if owner.get("host") != host:
                continue
            owner_pid = owner.get("pid")
            if isinstance(owner_pid, int) and owner_pid != pid and _pid_alive(owner_pid):
                continue
        # skip_if_finished: another process may have failed or finished it meanwhile.
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        failed.append(trial.number)
    if failed:
        log.warning(f"Marked {len(failed)} stale RUNNING trial(s) as FAIL: {sorted(failed)}")
    return sorted(failed)


class HeartbeatThread:
    """Records Optuna heartbeats for a batch of trials while their jobs run.

    ``study.optimize`` does this per trial; the sweeper asks and tells trials itself, so it
    must keep their heartbeats alive or other processes would fail them as stale.
    """

    def __init__(self, storage: BaseStorage | None, trial_ids: Sequence[int]) -> None:
        """Prepare the thread (started by ``__enter__``; no-op without heartbeat).

        Args:
            storage: The study's storage.
            trial_ids: Storage ids (``trial._trial_id``) of the running trials.
        """
        self._storage = storage
        self._trial_ids = list(trial_ids)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self, interval: float) -> None:
        while True:
            for trial_id in self._trial_ids:
                try:
                    self._storage.record_heartbeat(trial_id)  # type: ignore[union-attr]
                except Exception as e:  # a DB hiccup must not kill the sweep
                    log.debug(f"heartbeat for trial id {trial_id} failed: {e}")
            if self._stop.wait(timeout=interval):
                return

    def __enter__(self) -> HeartbeatThread:
        if _heartbeat_enabled(self._storage):
            interval = float(self._storage.get_heartbeat_interval())  # type: ignore[union-attr]
            self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@contextmanager
def quiet_heartbeat_warning() -> Iterator[None]:
    """Silence Optuna's "heartbeat is supposed to be used with Study.optimize" warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")
        yield
