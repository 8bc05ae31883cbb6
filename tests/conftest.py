"""Shared fixtures: the config folder, a Hydra compose helper, and a subprocess runner for the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pg_lifetime import pytest_configure, pytest_unconfigure  # noqa: F401  stops a PostgreSQL server the run started

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


@pytest.fixture(scope="session")
def conf_dir() -> Path:
    return CONF


@pytest.fixture
def compose():
    """compose(overrides) -> the job config as Hydra builds it for `python -m cl_sweep <overrides>`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import cl_sweep.config  # noqa: F401  registers the schemas

    def _compose(overrides: list[str] = ()):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))

    return _compose


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m cl_sweep ARGS` in a subprocess, returns the completed process (text output)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cl_sweep", *args],
        cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, env=full_env,
    )


#: The slow tests' test-set slice (benchmark.test_limit_per_task): a job scored on the first TEST_LIMIT
#: test examples of each task; tests that check the whole test set's numbers leave it out.
TEST_LIMIT = 100
TEST_SLICE = f"benchmark.test_limit_per_task={TEST_LIMIT}"

#: The learning-curve run (`curve_job`): 3 steps per task (192 examples, batch 64), evaluated every 2 steps.
CURVE_RUN = ("eval_every=2", "benchmark.limit_per_task=192", TEST_SLICE, "n_seeds=2", "logger=csv", "progress=false")


@pytest.fixture(scope="session")
def curve_job(tmp_path_factory) -> Path:
    """The job folder of one real run with learning curves and a CSV tracker (``CURVE_RUN``, Hard
    ASH on a Split-MNIST slice), shared by the result, tracking and figure tests."""
    job = tmp_path_factory.mktemp("curves") / "results" / "hard_ash"
    proc = run_cli(*CURVE_RUN, f"hydra.run.dir={job}", cwd=job.parents[1], timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return job
