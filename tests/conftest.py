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
