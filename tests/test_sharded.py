"""Sharded population sweeps (`hydra/launcher=population_submitit_local|population_slurm|population_ray`):
the shard plan, bad shard counts, the same bits as the local population launcher, and a resume after a
shard is SIGKILLed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cl_sweep.results import find_result_files, read_result
from conftest import REPO, run_cli

from hydra_plugins.cl_sweep_population_launcher.sharded import bad_shards, cost, cut

# Two structures (relu + sgd, relu + adagrad), 3 jobs each: with 2 models per call on the CPU, 4 calls.
GRID = ["--multirun", "+sweep=a6", "activation=relu", "optimizer=sgd,adagrad", "benchmark.limit_per_task=64", "n_seeds=1",
        "progress=false", "hydra.launcher.max_population=2"]
NUMBERS = ("status", "seeds", "overrides", "early_stopped", "diverged", "final_accuracy", "accuracy_matrix", "active_fraction")


def by_point(root: Path) -> dict:
    return {tuple(sorted(r["overrides"])): r for r in map(read_result, find_result_files(root))}


def same_numbers(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        for field in NUMBERS:
            assert a[key][field] == b[key][field], (key, field)


@pytest.fixture(scope="module")
def local_population(tmp_path_factory) -> dict:
    """The grid through the local `population` launcher: what every sharded run must reproduce."""
    sweep = tmp_path_factory.mktemp("local")
    proc = run_cli(*GRID, "hydra/launcher=population", f"hydra.sweep.dir={sweep}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = by_point(sweep)
    assert len(results) == 6 and len({r["optimizer"] for r in results.values()}) == 2
    return results


def test_cut_balances_contiguous_runs():
    assert cut([2, 1, 2, 1], 2) == [0, 2, 4]
    assert cut([1] * 10, 3) == [0, 3, 7, 10]
    assert cut([10, 1, 1, 1], 2) == [0, 1, 4]  # one call is never split
    assert cut([1, 1], 2) == [0, 1, 2]
    assert cut([5], 1) == [0, 1]


def test_cost_is_models_times_steps():
    cfg = {"n_seeds": 5, "benchmark": {"limit_per_task": 100, "batch_size": 32, "epochs_per_task": 2}}
    assert cost(cfg) == 5 * 2 * 4


def test_bad_shard_counts_are_one_paragraph():
    assert bad_shards(1, 6, False) is None and bad_shards(6, 6, False) is None
    assert bad_shards(0, 6, False) == (
        "cl_sweep: hydra.launcher.shards=0 is not allowed: it must be a whole number from 1 to 6, the number of jobs "
        "in this sweep (each shard is one process training at least one job; 1 trains them all in one process). "
        "Fix the override and run again: nothing was trained."
    )
    assert "shards=-1 is not allowed" in bad_shards(-1, 6, False)
    assert "shards=7 is not allowed: it must be a whole number from 1 to 6, the number of jobs in this batch" in bad_shards(7, 6, True)


@pytest.mark.slow
@pytest.mark.parametrize("shards", ["0", "7"])
def test_bad_shard_count_stops_the_sweep_before_anything(tmp_path, shards):
    proc = run_cli(*GRID, "hydra/launcher=population_submitit_local", f"hydra.launcher.shards={shards}",
                   f"hydra.sweep.dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert f"cl_sweep: hydra.launcher.shards={shards} is not allowed: it must be a whole number from 1 to 6" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not list(find_result_files(tmp_path)) and not (tmp_path / ".submitit").exists()


def _kill_after_first_call(out: Path, sweep: Path, proc: subprocess.Popen, deadline: float) -> int:
    """SIGKILLs the first shard process whose first call has ended (its results written); returns its number."""
    while time.monotonic() < deadline and proc.poll() is None:
        for log in (sweep / ".submitit").glob("*/*_0_log.err"):
            text = log.read_text()
            started = re.search(r"shard (\d)/2: \d+ jobs, pid (\d+)", text)
            if started and re.search(r"\] -   \d jobs in ", text):
                os.kill(int(started.group(2)), signal.SIGKILL)
                return int(started.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no shard finished a call in time:\n{out.read_text()[-3000:]}")


@pytest.mark.slow
def test_two_local_shards_match_the_population_launcher_and_resume_after_sigkill(tmp_path, local_population):
    """2 shards through submitit's local executor; one is SIGKILLed after its first call. The run keeps
    what that call wrote, the same command trains only the rest, and every result has the local
    population launcher's bits."""
    sweep, out = tmp_path / "sweep", tmp_path / "out.txt"
    args = [*GRID, "hydra/launcher=population_submitit_local", "hydra.launcher.shards=2", f"hydra.sweep.dir={sweep}"]
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "cl_sweep", *args], cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            killed = _kill_after_first_call(out, sweep, proc, time.monotonic() + 240)
            proc.wait(timeout=240)
        finally:
            proc.kill()
    first = out.read_text()
    assert re.search(r"shard 1/2: 3 jobs of 1 structures, 3 model-steps \(jobs 0, 1, 2\)", first)
    assert re.search(r"shard 2/2: 3 jobs of 1 structures, 3 model-steps \(jobs 3, 4, 5\)", first)
    assert f"shard {killed}/2 ended early" in first and "2 of its 3 jobs finished and are kept" in first
    assert proc.returncode == 1 and "1 of 6 jobs failed" in first
    kept = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in find_result_files(sweep)}
    assert len(kept) == 5  # the killed shard lost its call in flight (1 job), nothing else

    again = run_cli(*args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "5 of 6 jobs already complete, not re-run" in log
    assert "hydra.launcher.shards=2, but only 1 populations are left to train: 1 shard(s)" in log
    files = list(find_result_files(sweep))
    assert len(files) == 6 and len({f.parent for f in files}) == 6  # one result per job, none twice
    assert all((f.stat().st_mtime_ns, f.read_bytes()) == kept[f] for f in kept)  # the kept ones not trained again
    same_numbers(by_point(sweep), local_population)
