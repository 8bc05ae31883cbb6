"""XLA's persistent compilation cache (cl_sweep.training.compile_cache): on by default, per machine,
and a job that loads its programs from it gives the same bits as the job that compiled them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_SLICE, run_cli
from cl_sweep.training import compile_cache

JOB = ("benchmark.limit_per_task=128", TEST_SLICE, "n_seeds=2", "progress=false")


def _numbers(folder: Path) -> dict:
    r = json.loads((folder / "result.json").read_text())
    return {k: r[k] for k in ("final_accuracy", "accuracy_matrix", "active_fraction", "train_loss")}


def test_a_second_process_loads_every_program_and_gets_the_same_bits(tmp_path):
    cache = tmp_path / "xla"
    # JAX_LOG_COMPILES logs each cache hit; a JAX_COMPILATION_CACHE_DIR of the caller's would take precedence
    env = {"CL_SWEEP_XLA_CACHE": str(cache), "JAX_LOG_COMPILES": "1", "JAX_COMPILATION_CACHE_DIR": ""}
    first = run_cli(*JOB, f"hydra.run.dir={tmp_path}/first", env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    written = sorted(p.name for p in cache.iterdir())
    assert any(n.startswith("jit_train_steps") for n in written) and any(n.startswith("jit_init") for n in written), written

    second = run_cli(*JOB, f"hydra.run.dir={tmp_path}/second", env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    said = second.stdout + second.stderr  # JAX's log lines go through Hydra's logging, to stdout
    entries = [n for n in written if n.endswith("-cache")]
    assert said.count("Persistent compilation cache hit") == len(entries) > 0, said[-3000:]
    assert sorted(p.name for p in cache.iterdir()) == written  # nothing compiled anew, so nothing new written
    assert _numbers(tmp_path / "second") == _numbers(tmp_path / "first")


def test_where_the_cache_lives(monkeypatch, tmp_path):
    monkeypatch.setenv("CL_SWEEP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    default = compile_cache.cache_path()
    assert default.parent == tmp_path / "data" / "xla" and len(default.name) == 16
    # another CPU (another set of instruction-set flags) gets another folder: XLA compiles for the CPU at hand
    monkeypatch.setattr(compile_cache, "cpu_flags", lambda: "fpu sse2 avx2 fma")
    assert compile_cache.cache_path() != default and compile_cache.cache_path().parent == default.parent
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
    assert compile_cache.cache_path() == tmp_path / "mine"
    monkeypatch.setenv(compile_cache.ENV, "0")
    assert compile_cache.cache_path() is None


@pytest.mark.parametrize("env, expect", [
    ({"CL_SWEEP_XLA_CACHE": "0", "JAX_COMPILATION_CACHE_DIR": ""}, "None"),  # turned off
    ({"CL_SWEEP_XLA_CACHE": "{tmp}/mine", "JAX_COMPILATION_CACHE_DIR": ""}, "{tmp}/mine"),
    # a folder that cannot be created: compiled as before, one warning, no traceback
    ({"CL_SWEEP_XLA_CACHE": "/proc/cl_sweep_xla", "JAX_COMPILATION_CACHE_DIR": ""}, "None"),
    ({"CL_SWEEP_XLA_CACHE": "{tmp}/mine", "JAX_COMPILATION_CACHE_DIR": "{tmp}/users"}, "{tmp}/users"),  # the user's own stays
])
def test_enable_sets_jax_up_once(tmp_path, env, expect):
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    code = ("import jax; from cl_sweep.training import compile_cache as c; first = c.enable(); "
            "print(jax.config.jax_compilation_cache_dir or None, first == c.enable())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [expect.format(tmp=tmp_path), "True"]
    if "/proc/" in env["CL_SWEEP_XLA_CACHE"]:
        assert "compilation cache is off" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
