"""Sharded population sweeps (`hydra/launcher=population_submitit_local|population_slurm|population_ray`):
the shard plan, bad shard counts, the same bits as the local population launcher, and a resume after a
shard is SIGKILLed."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cl_sweep.results import find_result_files, read_result
from conftest import REPO, TEST_SLICE, run_cli

from hydra_plugins.cl_sweep_population_launcher.sharded import bad_shards, cost, cut, spans

# The README's commands: two structures (relu + sgd, relu + adagrad), 3 jobs each; on the CPU's 2 models
# per call, 4 calls. The tests add the slice (and a sweep folder).
LOCAL_COMMAND = ("python -m cl_sweep --multirun +sweep=a6 activation=relu optimizer=sgd,adagrad "
                 "hydra/launcher=population_submitit_local hydra.launcher.shards=2")
RAY_COMMAND = ("python -m cl_sweep --multirun +sweep=a6 activation=relu optimizer=sgd,adagrad "
               "hydra/launcher=population_ray hydra.launcher.shards=2")
SLICE = ["benchmark.limit_per_task=64", TEST_SLICE, "n_seeds=1", "progress=false", "hydra.launcher.max_population=2"]
GRID = ["--multirun", "+sweep=a6", "activation=relu", "optimizer=sgd,adagrad", *SLICE]
NUMBERS = ("status", "seeds", "overrides", "early_stopped", "diverged", "final_accuracy", "accuracy_matrix", "active_fraction")


def test_the_readme_shows_the_commands_these_tests_run():
    readme = (REPO / "README.md").read_text()
    assert LOCAL_COMMAND in readme and RAY_COMMAND in readme


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


def test_spans_shorten_job_numbers():
    assert spans([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8" and spans([4]) == "4" and spans([]) == ""


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
    args = [*LOCAL_COMMAND.split()[3:], *SLICE, f"hydra.sweep.dir={sweep}"]
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "cl_sweep", *args], cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            killed = _kill_after_first_call(out, sweep, proc, time.monotonic() + 240)
            proc.wait(timeout=240)
        finally:
            proc.kill()
    first = out.read_text()
    assert re.search(r"shard 1/2: 3 jobs of 1 structures, 3 model-steps \(jobs 0-2\)", first)
    assert re.search(r"shard 2/2: 3 jobs of 1 structures, 3 model-steps \(jobs 3-5\)", first)
    assert f"shard {killed}/2 ended early" in first and "2 of its 3 jobs finished and are kept" in first
    assert proc.returncode == 1 and "1 of 6 jobs failed" in first
    kept = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in find_result_files(sweep)}
    assert len(kept) == 5  # the killed shard lost its call in flight (1 job), nothing else

    again = run_cli(*args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "5 of 6 jobs already complete, not re-run" in log
    assert "hydra.launcher.shards=2, but only 1 batches of jobs are left to train: 1 shard(s)" in log
    files = list(find_result_files(sweep))
    assert len(files) == 6 and len({f.parent for f in files}) == 6  # one result per job, none twice
    assert all((f.stat().st_mtime_ns, f.read_bytes()) == kept[f] for f in kept)  # the kept ones not trained again
    same_numbers(by_point(sweep), local_population)


def test_population_slurm_submits_one_sbatch_array_with_one_gpu_per_shard(tmp_path, monkeypatch):
    """The launcher's executor through submitit's own submission, with a fake `sbatch` that keeps the script."""
    from hydra.utils import instantiate
    from test_launchers import compose_with_hydra

    from hydra_plugins.cl_sweep_population_launcher.sharded import train_shard

    (tmp_path / "bin").mkdir()
    for tool, body in (("sbatch", f'cp "$1" {tmp_path}/script.sh; echo "Submitted batch job 42"'), ("srun", "exit 0")):
        (tmp_path / "bin" / tool).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / "bin" / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    conf = compose_with_hydra(["hydra/launcher=population_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.shards=8",
                               f"hydra.sweep.dir={tmp_path}"]).hydra.launcher
    launcher = instantiate(conf)
    assert launcher.shards == 8
    jobs = launcher.executor().map_array(train_shard, list(range(8)))  # stand-ins for the 8 shards
    assert [j.job_id for j in jobs] == [f"42_{k}" for k in range(8)]
    script = (tmp_path / "script.sh").read_text()
    for line in ("--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1", "--partition=gpu", "--cpus-per-task=8",
                 "--mem=64GB", "--time=240", "--job-name=cl_sweep_shard", "--array=0-7%8"):
        assert f"#SBATCH {line}\n" in script
    assert f"#SBATCH --output={tmp_path}/.submitit/%A_%a/%A_%a_0_log.out\n" in script


def test_local_shards_see_their_own_gpu_or_this_processes(tmp_path, monkeypatch):
    """submitit's local executor sets CUDA_VISIBLE_DEVICES itself (none by default); each shard's setup line
    gives it its GPU of visible_gpus in turn, else the GPUs this process sees."""
    from hydra.utils import instantiate
    from test_launchers import compose_with_hydra

    def setup(*overrides: str, k: int) -> list[str]:
        conf = compose_with_hydra(["hydra/launcher=population_submitit_local", f"hydra.sweep.dir={tmp_path}", *overrides])
        return instantiate(conf.hydra.launcher)._local_executor(k)._executor.parameters["setup"]

    assert setup("hydra.launcher.visible_gpus=[0,1]", k=3) == ["export CUDA_VISIBLE_DEVICES=1"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert setup(k=0) == ["unset CUDA_VISIBLE_DEVICES"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert setup(k=1) == ["export CUDA_VISIBLE_DEVICES=2,3"]


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on this machine (`ray start --head --block`, 2 CPUs), stopped with its process group. The
    sweep reaches it on 127.0.0.1 (Ray binds its GCS to every interface and turns a `--node-ip-address` of
    127.0.0.1 into the machine's own address, so the flag cannot keep it on loopback)."""
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    port, temp = free_port(), Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths
    log = open(tmp_path / "ray_head.log", "w")
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
         f"--ray-client-server-port={free_port()}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (tmp_path / "ray_head.log").read_text():
            assert head.poll() is None and time.monotonic() < deadline, (tmp_path / "ray_head.log").read_text()[-3000:]
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_shards_on_a_local_head_match_the_population_launcher(tmp_path, ray_head, local_population):
    """The README's Ray command (with the slice) on a 2-CPU head: 2 shards as Ray tasks, the same bits."""
    proc = run_cli(*RAY_COMMAND.split()[3:], *SLICE, f"hydra.sweep.dir={tmp_path}", env={"RAY_ADDRESS": ray_head}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "submitted 2 shards as Ray tasks (1 CPUs, 0 GPUs each) to auto" in proc.stdout + proc.stderr
    same_numbers(by_point(tmp_path), local_population)
