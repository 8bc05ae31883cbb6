"""Parallel and cluster launchers: joblib (`hydra/launcher=parallel`), submitit (local as the stand-in
for SLURM), the `slurm_gpu` preset, and the per-job CPU thread setting `cpu_threads`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cl_sweep.results import find_result_files, read_result
from conftest import CONF, REPO, TEST_SLICE, run_cli

TINY = ["benchmark.limit_per_task=64", TEST_SLICE, "n_seeds=1", "progress=false"]
N_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def compose_with_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import cl_sweep.config  # noqa: F401  registers the schemas

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def job_logs(sweep_dir: Path) -> dict[str, str]:
    """Job folder name -> the text of its Hydra job log."""
    return {d.name: "".join(p.read_text() for p in d.glob("*.log")) for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()}


# --- presets: composition only --------------------------------------------------------------------
def test_parallel_preset_is_the_joblib_plugin_with_two_workers_and_overrides_the_a6_launcher():
    launcher = compose_with_hydra(["+sweep=a6", "hydra/launcher=parallel"]).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 2 and launcher.backend == "loky"
    assert "pre_dispatch" in launcher  # the plugin's schema underneath, not a copy
    # the plugin's own config is still there as is
    assert compose_with_hydra(["hydra/launcher=joblib"]).hydra.launcher.n_jobs == -1


def test_slurm_gpu_preset_asks_one_gpu_per_job_and_takes_a_partition():
    launcher = compose_with_hydra(["hydra/launcher=slurm_gpu"]).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1 and launcher.nodes == 1
    assert launcher.cpus_per_task >= 1 and launcher.timeout_min >= 1
    assert launcher.partition is None  # the user sets it (null: the cluster's default partition)


def test_slurm_gpu_preset_makes_a_one_gpu_sbatch_script(tmp_path, monkeypatch):
    """The preset's keys through submitit exactly as the plugin passes them (a fake `srun` stands in for SLURM)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    launcher = compose_with_hydra(["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"]).hydra.launcher
    params = {k: v for k, v in OmegaConf.to_container(launcher, resolve=False).items() if k != "_target_"}
    params.update(submitit_folder=str(tmp_path / "submitit"), name="cl_sweep")  # interpolations of a live sweep
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=params.pop("submitit_folder"), slurm_max_num_timeout=params.pop("max_num_timeout")
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})  # rejects unknown keys
    script = executor._executor._make_submission_file_text("python -m cl_sweep", "uid")
    for line in ("--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1", "--partition=gpu", "--cpus-per-task=4", "--time=60"):
        assert f"#SBATCH {line}\n" in script


def test_cpu_threads_defaults_to_null_and_follows_the_launcher(monkeypatch):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from cl_sweep.cli import launcher_cpu_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7}, raising=False)

    def follow(*overrides: str, mode=RunMode.MULTIRUN):
        cfg = compose_with_hydra(list(overrides))
        assert cfg.cpu_threads is None
        with open_dict(cfg):
            cfg.hydra.mode = mode
        HydraConfig.instance().set_config(cfg)
        try:
            return launcher_cpu_threads()[0]
        finally:
            HydraConfig.instance().cfg = None

    assert follow("hydra/launcher=parallel") == 4  # 8 CPUs // 2 workers
    assert follow("hydra/launcher=parallel", "hydra.launcher.n_jobs=3") == 2
    assert follow("hydra/launcher=parallel", "hydra.launcher.n_jobs=-1") == 1  # joblib: one worker per CPU
    assert follow("hydra/launcher=parallel", "hydra.launcher.n_jobs=16") == 1
    assert follow("hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu") == 4  # cpus_per_task
    assert follow("hydra/launcher=submitit_local") is None  # cpus_per_task unset: XLA's default
    assert follow("hydra/launcher=basic") is None
    assert follow("hydra/launcher=parallel", mode=RunMode.RUN) is None  # a single run is not split
    assert launcher_cpu_threads()[0] is None  # outside any Hydra job


@pytest.mark.parametrize("value", ["0", "-2"])
def test_bad_cpu_threads_is_a_clear_config_error(tmp_path, value):
    proc = run_cli(f"cpu_threads={value}", *TINY, f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == 2
    assert (
        f"cl_sweep: invalid configuration: cpu_threads={value} is not allowed; it must be null (follow the launcher) "
        "or a positive integer (threads per job). Fix the override (or the config file) and run again: nothing was trained."
    ) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "result.json").exists()


# --- real processes -------------------------------------------------------------------------------
_PROBE = r"""
import logging, os, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
import jax, jax.numpy as jnp
from cl_sweep.cli import apply_cpu_threads
if sys.argv[1] == "late":
    jax.devices()
    apply_cpu_threads(1)
    apply_cpu_threads(1)
    apply_cpu_threads(2)
else:
    if sys.argv[1] == "one":
        apply_cpu_threads(1)
    jax.jit(lambda a: (a @ a).sum())(jnp.ones((256, 256))).block_until_ready()
    print(len(os.listdir("/proc/self/task")), os.environ.get("XLA_FLAGS"), os.environ.get("OMP_NUM_THREADS"),
          sorted(os.sched_getaffinity(0)) == sorted(os.sched_getaffinity(os.getppid())))
"""


def _probe(mode: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "OMP_NUM_THREADS")}
    return subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)


@pytest.mark.slow
@pytest.mark.skipif(N_CPUS < 2 or not Path("/proc/self/task").is_dir(), reason="needs Linux and 2 CPUs")
def test_apply_cpu_threads_starts_xla_with_fewer_threads_and_warns_once_when_too_late():
    default, one = _probe("default"), _probe("one")
    assert default.returncode == 0 and one.returncode == 0, default.stderr[-2000:] + one.stderr[-2000:]
    n_default, *_ = default.stdout.split()
    n_one, flags, omp, affinity_restored = one.stdout.split()
    assert int(n_one) < int(n_default)  # XLA's thread pools were sized for one CPU
    assert flags == "--xla_cpu_multi_thread_eigen=false" and omp == "1"
    assert affinity_restored == "True"  # the process may still run on every CPU
    assert "cpu_threads=1: XLA CPU client started with 1 thread(s)" in one.stderr

    late = _probe("late")
    assert late.returncode == 0, late.stderr[-2000:]
    assert late.stderr.count("not applied: XLA already started") == 1  # warned once, not per job


@pytest.mark.slow
def test_joblib_launcher_runs_four_jobs_on_two_workers_with_one_xla_thread_each(tmp_path):
    # under the grid sweeper, whose line hears the workers' returns per batch; progress left at its
    # default: the jobs in the worker processes draw no per-task bars
    proc = run_cli(
        "--multirun", "hydra/sweeper=grid", "hydra/launcher=parallel", "seed=0,1,2,3", *[a for a in TINY if a != "progress=false"],
        f"hydra.sweep.dir={tmp_path}", timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in proc.stdout + proc.stderr
    assert re.search(r"sweep done: 4/4 jobs in \S+ \([0-9.]+ models/s\): 4 ok, 0 diverged, 0 failed", proc.stderr)
    assert "task 1/5" not in proc.stderr and "test accuracy" not in proc.stderr
    results = [read_result(f) for f in find_result_files(tmp_path)]
    assert sorted(r["seeds"][0] for r in results) == [0, 1, 2, 3]
    assert all(r["status"] == "ok" for r in results)

    logs = job_logs(tmp_path)
    assert sorted(logs) == ["0", "1", "2", "3"]
    expected = max(1, N_CPUS // 2)
    for text in logs.values():  # every job ran with the setting, in a worker process
        assert f"cpu_threads={expected} (from the joblib launcher: {N_CPUS} CPUs // n_jobs=2)" in text
    started = re.findall(r"XLA CPU client started with (\d+) thread\(s\) in pid (\d+)", "".join(logs.values()))
    assert 1 <= len(started) <= 2 and {n for n, _ in started} == {str(expected)}  # once per worker, reused after
    pids = set(re.findall(r"in (?:pid |this process \(pid )(\d+)", "".join(logs.values())))
    assert 1 <= len(pids) <= 2


@pytest.mark.slow
def test_submitit_local_multirun_writes_both_results(tmp_path):
    proc = run_cli(
        "--multirun", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1",
        "seed=0,1", *TINY, f"hydra.sweep.dir={tmp_path}", timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {f.parent.name: read_result(f) for f in find_result_files(tmp_path)}
    assert sorted(results) == ["0", "1"]
    assert [results[k]["seeds"] for k in ("0", "1")] == [[0], [1]]
    assert all("hydra/launcher=submitit_local" not in r["overrides"] for r in results.values())  # not a job override
    logs = job_logs(tmp_path)
    assert all("cpu_threads=1 (from hydra.launcher.cpus_per_task)" in logs[k] for k in ("0", "1"))
    # submitit's own records: one folder per job, with its stdout/stderr
    assert len([p for p in (tmp_path / ".submitit").glob("*/*_log.out")]) == 2
