"""Optuna storage construction, trial ownership tags, heartbeats and stale-trial failing."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

JOURNAL_SCHEME = "journal://"
OWNER_ATTR = "sweeper_owner"
# System attribute holding the wall-clock time (epoch seconds) of a trial's last heartbeat on
# storages without Optuna's own heartbeat (JournalStorage); see HeartbeatThread.
HEARTBEAT_ATTR = "sweeper_heartbeat"
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
            SQLAlchemy URL (an ``RDBStorage``, e.g. PostgreSQL through
            ``postgresql+psycopg2://``). Parent directories of SQLite and journal files are
            created.
        heartbeat_interval: Seconds between Optuna heartbeats of running trials; RDB only
            (journal storages get the sweeper's own, see ``HeartbeatThread``), ``None``
            disables the heartbeat.
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
    return _rdb_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)


def _rdb_storage(url: str, *, heartbeat_interval: int | None, grace_period: int | None) -> RDBStorage:
    """``RDBStorage(url)``, retried while concurrent workers race to create the schema.

    On a fresh database every worker's ``RDBStorage`` runs ``CREATE TABLE/TYPE``; when two
    start together (PostgreSQL) one of them gets "already exists" (IntegrityError or
    ProgrammingError). The next attempt finds the schema and goes on.
    """
    import sqlalchemy.exc

    attempts = 8
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():
                # heartbeat_interval is "experimental" in Optuna but has been stable since 2.x.
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as e:
            if attempt == attempts:
                raise
            log.debug(f"creating the Optuna schema raced with another worker ({type(e).__name__}); retrying")
            time.sleep(0.05 + 0.25 * random.random())
    raise AssertionError("unreachable")


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


def _process_start(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_tag() -> dict[str, Any]:
    """Return the ownership tag stored on every trial this process asks.

    ``start`` (the process start time, Linux only) tells a live process from a later one
    that reused the pid of a dead sweeper.
    """
    tag: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    start = _process_start(os.getpid())
    if start is not None:
        tag["start"] = start
    return tag


def _pid_alive(pid: int, start: Any = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists but belongs to someone else
        pass
    if isinstance(start, int):
        current = _process_start(pid)
        if current is not None and current != start:
            return False  # the pid was reused by another process
    return True


def heartbeat_enabled(storage: Any) -> bool:
    """Whether ``storage`` runs Optuna's own heartbeat (RDB with ``heartbeat_interval``)."""
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    return interval is not None and hasattr(storage, "record_heartbeat")


def stale_reason(
    trial: FrozenTrial,
    *,
    own_live_numbers: Collection[int] = (),
    heartbeat_grace: float | None = None,
    now: float | None = None,
) -> str | None:
    """Why the RUNNING ``trial`` is stale (its process is gone), or None if it may be alive.

    Rules (Optuna's RDB heartbeat is checked separately, by :func:`fail_stale_trials`):

    * Our heartbeat (``HEARTBEAT_ATTR``, journal storages): older than ``heartbeat_grace``
      seconds, whichever host ran it.
    * Ownership: no owner tag (not asked by this sweeper, e.g. an abandoned ``study.ask()``);
      owned by this very process but not in ``own_live_numbers``; or owned by a process on
      this host that no longer exists. Trials of live processes and of other hosts (without
      a stale heartbeat) are alive as far as this process can tell.

    Args:
        trial: A RUNNING trial.
        own_live_numbers: Numbers of the trials this process is running or launching now.
        heartbeat_grace: Seconds without our heartbeat after which a trial is stale; None
            ignores our heartbeat.
        now: Current epoch time (default: ``time.time()``).
    """
    if trial.number in own_live_numbers:
        return None
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if heartbeat_grace is not None and isinstance(beat, (int, float)):
        age = (time.time() if now is None else now) - beat
        if age > heartbeat_grace:
            return f"no heartbeat for {age:.0f} s"
    owner = trial.user_attrs.get(OWNER_ATTR)
    if not isinstance(owner, dict):
        return "no owner tag"
    if owner.get("host") != socket.gethostname():
        return None
    owner_pid = owner.get("pid")
    if owner_pid == os.getpid():
        return "owned by this process, which does not run it"
    if isinstance(owner_pid, int) and _pid_alive(owner_pid, owner.get("start")):
        return None
    return f"owner process {owner_pid} is gone"


def fail_stale_trials(
    study: optuna.Study,
    *,
    own_live_numbers: Collection[int] = (),
    heartbeat_grace: float | None = None,
) -> list[int]:
    """Mark RUNNING trials whose process is gone as FAIL.

    Two rules, applied in order:

    1. Heartbeat (RDB storages with ``heartbeat_interval``): Optuna's
       ``fail_stale_trials`` fails trials whose last heartbeat is older than the grace
       period, whichever host ran them.
    2. :func:`stale_reason`: our own heartbeat (journal storages), then ownership: a
       RUNNING trial is failed when it has no owner tag, or its owner is a process on this
       host that no longer exists (or this very process, for trials it does not hold).
       Trials owned by live processes, or by processes on other hosts, are left alone:
       on other hosts only a heartbeat can tell.

    Args:
        study: The study.
        own_live_numbers: Numbers of trials this process is running right now.
        heartbeat_grace: Passed to :func:`stale_reason`.

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

    now = time.time()
    for trial in running:
        reason = stale_reason(trial, own_live_numbers=own_live_numbers, heartbeat_grace=heartbeat_grace, now=now)
        if reason is None:
            continue
        # skip_if_finished: another process may have failed or finished it meanwhile.
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        log.info(f"Trial {trial.number} was RUNNING but is stale ({reason}): marked FAIL")
        failed.append(trial.number)
    if failed:
        log.warning(f"Marked {len(failed)} stale RUNNING trial(s) as FAIL: {sorted(failed)}")
    return sorted(failed)


class HeartbeatThread:
    """Records heartbeats for a batch of trials while their jobs run.

    ``study.optimize`` does this per trial; the sweeper asks and tells trials itself, so it
    must keep their heartbeats alive or other processes would fail them as stale. RDB
    storages with a heartbeat get Optuna's (``record_heartbeat``); other storages get ours
    when ``interval`` is given: the ``HEARTBEAT_ATTR`` system attribute set to the current
    epoch time (one small journal record per trial and interval).
    """

    def __init__(self, storage: BaseStorage | None, trial_ids: Sequence[int], interval: float | None = None) -> None:
        """Prepare the thread (started by ``__enter__``; no-op without any heartbeat).

        Args:
            storage: The study's storage.
            trial_ids: Storage ids (``trial._trial_id``) of the running trials.
            interval: Seconds between our own heartbeats on storages without Optuna's.
        """
        self._storage = storage
        self._trial_ids = list(trial_ids)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self, trial_id: int) -> None:
        if heartbeat_enabled(self._storage):
            self._storage.record_heartbeat(trial_id)  # type: ignore[union-attr]
        else:
            self._storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())  # type: ignore[union-attr]

    def _run(self, interval: float) -> None:
        while True:
            for trial_id in self._trial_ids:
                try:
                    self._beat(trial_id)
                except Exception as e:  # a DB hiccup (or a trial finished meanwhile) must not kill the sweep
                    log.debug(f"heartbeat for trial id {trial_id} failed: {e}")
            if self._stop.wait(timeout=interval):
                return

    def __enter__(self) -> HeartbeatThread:
        interval: float | None = None
        if heartbeat_enabled(self._storage):
            interval = float(self._storage.get_heartbeat_interval())  # type: ignore[union-attr]
        elif self._storage is not None and self._interval is not None:
            interval = float(self._interval)
        if interval is not None:
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
