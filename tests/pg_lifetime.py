"""pytest hooks: a PostgreSQL server that a test run started (scripts/postgres.sh, on demand, for
the shared-study tests) is stopped when the run ends, also on failure or Ctrl-C.

A server that was already running when the run began (``make postgres``), one that another test run
started meanwhile (a second checkout's run on the same machine), or one given by
``$CL_SWEEP_TEST_POSTGRES_URL``, is left alone: the run gives itself an id
(``$CL_SWEEP_PG_STARTED_BY``, inherited by its xdist workers and subprocesses), scripts/postgres.sh
writes the id of whoever started the server beside its data, and only that run stops it. Only
pytest's main process decides: xdist workers share the server, so none of them may stop it while
the others still use it.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "postgres.sh"


def _postgres(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=300)


def _owner(config) -> bool:
    return not hasattr(config, "workerinput") and not os.environ.get("CL_SWEEP_TEST_POSTGRES_URL")


RUN_ID = "CL_SWEEP_PG_STARTED_BY"


def _started_by() -> str | None:
    """The id scripts/postgres.sh wrote when it last started the server, None if it wrote none."""
    folder = Path(os.environ.get("CL_SWEEP_PG_DIR", "/tmp/cl_sweep_pg"))
    try:
        return (folder / "started_by").read_text().strip()
    except OSError:
        return None


def pytest_configure(config) -> None:
    if _owner(config):
        config._cl_sweep_run_id = os.environ[RUN_ID] = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pytest_unconfigure(config) -> None:
    run_id = getattr(config, "_cl_sweep_run_id", None)
    if _owner(config) and run_id and _started_by() == run_id and _postgres("status").returncode == 0:
        _postgres("stop")
