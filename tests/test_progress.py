"""The sweep's progress line (cl_sweep.progress) on a fake clock: counts, models per second, ETA,
when a plain line is written, the terminal bar, and when the per-task bars are on."""

from __future__ import annotations

import io
import pickle

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from cl_sweep import progress
from cl_sweep.progress import JobEnd, SweepProgress, report, sweep_progress, task_bars
from cl_sweep.results import Objective


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def job(num: int, value: float = 0.5, *, models: int = 2, pruned: bool = False, error: Exception | None = None) -> JobReturn:
    """A job's return as Hydra's run_job makes it: its job number, status and value."""
    ret = JobReturn()
    ret.hydra_cfg = OmegaConf.create({"hydra": {"job": {"num": num}}})
    ret.status = JobStatus.FAILED if error else JobStatus.COMPLETED
    ret._return_value = error or Objective(value, pruned=pruned, models=models)
    return ret


def test_plain_lines_at_each_tenth_or_after_30_s_and_a_summary():
    clock, out = Clock(), io.StringIO()  # not a terminal: plain lines
    bar = SweepProgress(20, stream=out, clock=clock)
    clock.t = 10
    bar.report(job(0))
    assert out.getvalue() == ""  # 1/20: no tenth crossed, 10 s since the start
    clock.t = 20
    bar.report(job(1))  # 2/20: a tenth; 4 models in 20 s; 18 jobs left at 10 s per job
    assert out.getvalue().splitlines() == ["sweep: 2/20 jobs (10%) in 00:20, 0.20 models/s, ETA 03:00, 0 diverged, 0 failed"]
    clock.t = 30
    bar.report(job(2, float("nan")))  # diverged: counted, no line yet
    clock.t = 40
    bar.report(job(3, error=RuntimeError("boom")))  # failed: no models, not in the ETA's trained jobs
    assert out.getvalue().splitlines()[-1] == "sweep: 4/20 jobs (20%) in 00:40, 0.15 models/s, ETA 03:33, 1 diverged, 1 failed"
    clock.t = 75
    bar.report(job(4))  # no tenth crossed, but 35 s since the last line
    bar.report(job(4))  # the same job again (its sweeper reports it after its launcher): counted once
    assert len(out.getvalue().splitlines()) == 3 and bar.done == 5
    assert out.getvalue().splitlines()[-1].startswith("sweep: 5/20 jobs (25%) in 01:15, 0.11 models/s, ETA 04:41")
    for num in range(5, 20):
        clock.t += 10
        bar.report(job(num))
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(" in ")[0] for line in lines[3:]] == [f"sweep: {n}/20 jobs ({5 * n}%)" for n in (6, 8, 10, 12, 14, 16, 18)] + [
        "sweep done: 20/20 jobs"]
    assert lines[-1] == "sweep done: 20/20 jobs in 03:45 (0.17 models/s): 18 ok, 1 diverged, 1 failed; 0 already complete"


def test_eta_counts_only_jobs_this_run_trained():
    """Jobs found complete take no time: the ETA comes from the trained ones (else a resumed sweep promises too much)."""
    clock, out = Clock(), io.StringIO()
    bar = SweepProgress(10, stream=out, clock=clock)
    assert bar.eta() is None and bar.rate() is None
    for num in range(4):
        bar.report(job(num, models=0))  # already complete: Objective.models 0
    clock.t = 10
    bar.report(job(4, models=5))
    assert bar.eta() == 5 * 10.0 and bar.rate() == 0.5
    bar.close()
    assert out.getvalue().splitlines()[-1] == "sweep stopped: 5/10 jobs in 00:10 (0.50 models/s): 5 ok, 0 diverged, 0 failed; 4 already complete"


def test_a_resumed_study_starts_at_its_finished_trials_and_counts_pruned_ones():
    clock, out = Clock(), io.StringIO()
    bar = SweepProgress(5, unit="trials", done=3, prunes=True, stream=out, clock=clock)
    clock.t = 6
    bar.report(job(3, float("nan"), pruned=True, models=1))
    assert out.getvalue() == "sweep: 4/5 trials (80%) in 00:06, 0.17 models/s, ETA 00:06, 0 diverged, 0 failed, 1 pruned\n"
    clock.t = 8
    bar.report(job(4), failed=True)  # its sweeper failed it (e.g. an objective it lacks)
    bar.close()
    assert out.getvalue().splitlines()[-1] == (
        "sweep done: 5/5 trials in 00:08 (0.38 models/s): 0 ok, 0 diverged, 1 failed, 1 pruned; 3 already complete")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_bar_redraws_in_place_and_disabled_prints_nothing():
    clock, tty = Clock(), Terminal()
    bar = SweepProgress(3, stream=tty, clock=clock)
    clock.t = 4
    bar.report(job(0, float("nan")))
    drawn = tty.getvalue()
    assert "\n" not in drawn and "\rsweep 1/3 jobs, 0.50 models/s, ETA 00:08, 1 diverged, 0 failed |" in drawn
    bar.close()
    assert tty.getvalue().endswith("sweep stopped: 1/3 jobs in 00:04 (0.50 models/s): 0 ok, 1 diverged, 0 failed; 0 already complete\n")

    quiet = io.StringIO()
    off = SweepProgress(3, stream=quiet, clock=clock, enabled=False)
    for num in range(3):
        off.report(job(num))
    off.close()
    assert quiet.getvalue() == "" and off.counts["ok"] == 3


def test_what_the_jobs_print_on_the_terminal_goes_above_the_bar(monkeypatch):
    """Hydra's log lines and the job summaries (stdout) and the jobs' notes (stderr) would otherwise
    continue the bar's line; the bar is cleared, the text written as whole lines, the bar drawn again."""
    out, err = Terminal(), Terminal()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    bar = SweepProgress(2, clock=Clock())
    import sys

    assert sys.stdout is not out and sys.stderr is not err
    print("split_mnist  activation=relu")  # print: the text, then its newline, in two writes
    logging_line = "[HYDRA] #1 : activation=relu\n"  # a logging handler: one write
    sys.stdout.write(logging_line)
    print("already complete, not re-run", file=sys.stderr)
    assert out.getvalue() == "split_mnist  activation=relu\n" + logging_line  # no line lost, none doubled
    drawn = err.getvalue()
    note = drawn.index("already complete, not re-run\n")
    assert drawn.count("\rsweep 0/2 jobs, ? models/s") >= 4  # drawn, then again after each of the three writes
    assert drawn.rindex("\rsweep 0/2 jobs") > note and "                \r" in drawn[:note]  # cleared before, redrawn after
    bar.close()
    assert sys.stdout is out and sys.stderr is err


def test_a_launcher_inside_a_sweeper_reports_to_the_sweepers_line_and_the_key_turns_it_off():
    out = io.StringIO()
    with sweep_progress(4, OmegaConf.create({"sweep_progress": True}), stream=out) as outer:
        with sweep_progress(2, OmegaConf.create({"sweep_progress": True}), stream=out) as inner:
            assert inner is outer and outer.total == 4  # the population launcher under the grid sweeper
            report(job(0))
        assert progress._active is outer  # the launcher's exit leaves the sweeper's line open
        JobEnd().on_job_end(config=None, job_return=job(1))  # Hydra's callback after an in-process job
        stand_in = job(2)
        stand_in._return_value = object()  # the population launcher's collector: not a job's result
        JobEnd().on_job_end(config=None, job_return=stand_in)
        assert outer.done == 2
    assert progress._active is None and "sweep stopped: 2/4 jobs" in out.getvalue()
    report(job(3))  # no sweep open: nothing to count, no error

    silent = io.StringIO()
    with sweep_progress(1, OmegaConf.create({"sweep_progress": False}), stream=silent) as bar:
        report(job(0))
    assert bar.done == 1 and silent.getvalue() == ""


def test_per_task_bars_follow_progress_and_are_off_inside_a_sweep_by_default():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    import cl_sweep.config  # noqa: F401  registers the schemas
    from conftest import CONF

    assert task_bars(None) and task_bars(True) and not task_bars(False)  # a single job, a notebook: on
    with sweep_progress(2, None, stream=io.StringIO()):
        assert not task_bars(None) and task_bars(True)  # the launcher's process of a sweep

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    assert cfg.progress is None and cfg.sweep_progress is True  # the defaults
    try:
        for mode, on in ((RunMode.MULTIRUN, False), (RunMode.RUN, True)):  # a job of a multirun, in any process
            with read_write(cfg.hydra):
                cfg.hydra.mode = mode
            HydraConfig.instance().set_config(cfg)
            assert task_bars(None) is on
    finally:
        HydraConfig.instance().cfg = None


def test_a_jobs_return_carries_the_models_it_trained_across_processes():
    from cl_sweep.training.train import objective

    result = {"final_accuracy_mean": 0.5, "status": "ok", "seeds": [0, 1, 2]}
    assert objective(result).models == 3 and objective(result, trained=False).models == 0
    value = pickle.loads(pickle.dumps(Objective(0.5, models=3, pruned=True)))
    assert value.models == 3 and value.pruned and float(value) == 0.5
