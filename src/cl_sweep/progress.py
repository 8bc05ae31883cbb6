"""One line for a whole sweep: jobs done/total, models per second, ETA, failures so far.

The grid sweeper, the population launcher and the Optuna sweeper open it (`sweep_progress`) in
the process that launches the jobs; it hears each job's return as it comes back (`report`): one
by one from the basic launcher, per population from the population launcher, per batch from
joblib. A launcher inside a sweeper reports to the sweeper's line, so a job counts once. On a
terminal the line is a tqdm bar above the per-task bars; elsewhere (CI, SLURM logs, a pipe) it
is plain lines, at every tenth of the sweep or every `INTERVAL_S` seconds, whichever comes first,
and a summary at the end. ``sweep_progress=false`` (a top-level key) turns it off.

The per-task bars of a job inside a multirun are off unless ``progress=true`` asks for them
(`task_bars`): with hundreds of jobs they are noise, and the sweep's line says how far it is.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from tqdm import tqdm

#: How a job ended, as the line counts it (a failed job raised; a diverged one returned NaN).
OUTCOMES = ("ok", "diverged", "failed", "pruned")
#: Off a terminal, the most seconds between two plain lines while jobs keep ending.
INTERVAL_S = 30.0

_active: SweepProgress | None = None


def outcome(ret: Any) -> tuple[str, int]:
    """A Hydra ``JobReturn`` as (one of `OUTCOMES`, models it trained in this run).

    cl_sweep's jobs return a `cl_sweep.results.Objective` that says both (``models`` 0: its result
    was already complete); any other job's return counts as one model.
    """
    from hydra.core.utils import JobStatus

    if ret.status != JobStatus.COMPLETED:
        return "failed", 0
    value = ret.return_value
    models = int(getattr(value, "models", 1))
    if getattr(value, "pruned", False):
        return "pruned", models
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "failed", models
    return ("ok" if math.isfinite(number) else "diverged"), models


def _key(ret: Any) -> Any:
    """The job's number in the sweep (a trial's number for Optuna): one job is counted once."""
    try:
        return int(ret.hydra_cfg.hydra.job.num)
    except AttributeError:  # a launcher that did not go through Hydra's run_job
        return id(ret)


def _clock(seconds: float | None) -> str:
    return "?" if seconds is None else tqdm.format_interval(seconds)


class _AboveTheBars:
    """A terminal stream while the sweep's bar is drawn: text goes above the bars, whole lines at a time
    (as `tqdm.write` puts it), while a bar's own drawing (carriage returns, cursor moves) passes through."""

    def __init__(self, stream: TextIO, bars: TextIO):
        self.stream, self.bars, self.owed = stream, bars, False

    def write(self, text: str) -> int:
        if self.owed and text == "\n":  # print's newline after its text, which already ended its line
            self.owed = False
            return len(text)
        self.owed = False
        if "\r" in text or "\x1b" in text or not text.strip():
            return self.stream.write(text)
        with tqdm.external_write_mode(file=self.bars):
            self.stream.write(text if text.endswith("\n") else text + "\n")
            self.stream.flush()
        self.owed = not text.endswith("\n")
        return len(text)

    def __eq__(self, other: object) -> bool:  # tqdm clears a bar drawn through this as one drawn on the stream
        return other is self or other == self.stream

    __hash__ = object.__hash__

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class SweepProgress:
    """The counts and the display of one sweep; ``clock`` and ``stream`` are injectable for tests.

    ``done`` jobs were finished before this run (a resumed Optuna study); ``prunes``: the sweep can
    prune, so the line shows the pruned count. The rate and the ETA count only jobs this run
    trained: jobs found already complete take no time and would make the ETA a guess.
    """

    def __init__(self, total: int, *, unit: str = "jobs", done: int = 0, prunes: bool = False, enabled: bool = True,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic, interval: float = INTERVAL_S):
        self.total, self.unit, self.before, self.prunes, self.enabled = total, unit, done, prunes, enabled
        self.stream = sys.stderr if stream is None else stream
        self.clock, self.interval = clock, interval
        self.start = self.last_line = clock()
        self.seen: set = set()
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.models = self.trained = 0  # models and jobs this run trained
        self.complete = done  # jobs finished before this run or found complete (trained nothing)
        self.tty = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.bar = None
        self.redirected: list[tuple[str, _AboveTheBars]] = []
        if self.tty:
            self.bar = tqdm(total=total, initial=done, desc="sweep", file=self.stream, leave=False, mininterval=0,
                            dynamic_ncols=True, bar_format="{desc} {n}/{total} " + unit + "{postfix} |{bar}|")
            self.bar.set_postfix_str(self._state())
            # what the jobs and Hydra print to the same terminal goes above the bar, not into its line
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if stream is self.stream or (name == "stdout" and getattr(stream, "isatty", lambda: False)()):
                    self.redirected.append((name, _AboveTheBars(stream, self.stream)))
                    setattr(sys, name, self.redirected[-1][1])

    @property
    def done(self) -> int:
        return self.before + len(self.seen)

    def report(self, ret: Any, failed: bool = False) -> None:
        """One job's return (``failed``: its sweeper failed it, e.g. a missing objective); a second report of it is ignored."""
        key = _key(ret)
        if key in self.seen:
            return
        kind, models = outcome(ret)
        if failed and kind == "ok":
            kind = "failed"
        self.seen.add(key)
        self.counts[kind] += 1
        self.models += models
        self.trained += models > 0
        self.complete += models == 0 and kind != "failed"
        self._show()

    def rate(self) -> float | None:
        """Models trained per second of this run, None before the first."""
        elapsed = self.clock() - self.start
        return self.models / elapsed if self.models and elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds left: the jobs left times this run's seconds per trained job; None before the first."""
        left = max(0, self.total - self.done)
        if left == 0:
            return 0.0
        return left * (self.clock() - self.start) / self.trained if self.trained else None

    def _state(self) -> str:
        rate = self.rate()
        shown = [f"{'?' if rate is None else f'{rate:.2f}'} models/s", f"ETA {_clock(self.eta())}",
                 f"{self.counts['diverged']} diverged", f"{self.counts['failed']} failed"]
        if self.prunes or self.counts["pruned"]:
            shown.append(f"{self.counts['pruned']} pruned")
        return ", ".join(shown)

    def line(self) -> str:
        """The plain line: ``sweep: 12/150 jobs (8%) in 05:12, 0.41 models/s, ETA 1:02:03, 1 diverged, 0 failed``."""
        percent = 100 * self.done // self.total if self.total else 100
        return f"sweep: {self.done}/{self.total} {self.unit} ({percent}%) in {_clock(self.clock() - self.start)}, {self._state()}"

    def summary(self) -> str:
        """The last line: what the sweep did, counted by outcome."""
        verb = "done" if self.done >= self.total else "stopped"
        counts = ", ".join(f"{n} {k}" for k, n in self.counts.items() if k != "pruned" or self.prunes or n)
        rate = self.rate()
        return (f"sweep {verb}: {self.done}/{self.total} {self.unit} in {_clock(self.clock() - self.start)}"
                f" ({'nothing trained' if rate is None else f'{rate:.2f} models/s'}): {counts}; {self.complete} already complete")

    def _show(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = self.done
            self.bar.set_postfix_str(self._state())  # refreshes
            return
        now, tenth = self.clock(), max(1, math.ceil(self.total / 10))
        crossed = (self.done // tenth) > ((self.done - 1) // tenth)
        if self.done < self.total and (crossed or now - self.last_line >= self.interval):
            self.last_line = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """Ends the bar; the summary, unless no job ended in this run (a refused config, a study already complete)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        for name, wrapper in self.redirected:
            if getattr(sys, name) is wrapper:
                setattr(sys, name, wrapper.stream)
        if self.seen:
            print(self.summary(), file=self.stream, flush=True)


@contextlib.contextmanager
def sweep_progress(total: int, config: Any, **kwargs: Any) -> Iterator[SweepProgress]:
    """The sweep's line while the block runs, its summary after; ``config``'s ``sweep_progress``
    (default true) shows it. Inside another sweep's line (a launcher under a sweeper), that one."""
    global _active
    if _active is not None:
        yield _active
        return
    enabled = bool(config.get("sweep_progress", True)) if config is not None else True
    _active = SweepProgress(total, enabled=enabled, **kwargs)
    try:
        yield _active
    finally:
        _active.close()
        _active = None


def report(ret: Any, failed: bool = False) -> None:
    """Counts one job's return on the open sweep line (nothing outside one)."""
    if _active is not None:
        _active.report(ret, failed)


class JobEnd(Callback):
    """Hydra callback (``hydra.callbacks.sweep_progress`` in conf/config.yaml): counts a job that a
    launcher runs in this process as soon as it ends; Hydra's basic launcher hands its returns to the
    sweeper only after the batch's last job. A launcher's stand-in return (the population
    launcher's collector) is left to that launcher, which reports the job when it has trained."""

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus

        if job_return.status != JobStatus.COMPLETED or isinstance(job_return.return_value, (int, float)):
            report(job_return)


def task_bars(progress: bool | None) -> bool:
    """Whether a job shows its per-task bars: ``progress`` when set, else (null) only outside a
    sweep: not in a multirun job (any launcher, any process) nor under an open sweep line."""
    if progress is not None:
        return bool(progress)
    if _active is not None:
        return False
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)
    except Exception:  # not inside a Hydra job
        return True
