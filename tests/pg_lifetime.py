"""pytest hooks: a PostgreSQL server that a test run started (scripts/postgres.sh, on demand, for
the shared-study tests) is stopped when the run ends, also on failure or Ctrl-C.

A server that was already running when the run began (``make postgres``), or one given by
``$CL_SWEEP_TEST_POSTGRES_URL``, is left alone. Only pytest's main process decides: xdist
workers share the server, so none of them may stop it while the others still use it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "postgres.sh"


def _postgres(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=300)


def _owner(config) -> bool:
    return not hasattr(config, "workerinput") and not os.environ.get("CL_SWEEP_TEST_POSTGRES_URL")


def pytest_configure(config) -> None:
    if _owner(config):
        config._cl_sweep_postgres_was_running = _postgres("status").returncode == 0


def pytest_unconfigure(config) -> None:
    if _owner(config) and getattr(config, "_cl_sweep_postgres_was_running", True) is False:
        if _postgres("status").returncode == 0:
            _postgres("stop")
