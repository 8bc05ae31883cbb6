"""`make test` leaves no PostgreSQL server behind: the server a test run starts for the shared-study
tests is stopped when the run ends, on success, on failure and on Ctrl-C (tests/pg_lifetime.py).

Each test runs pytest in a subprocess against its own server (another port and data folder), so
the server of the run executing these tests is never touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "postgres.sh"


@pytest.fixture
def private_server_env():
    """Environment for a server of our own: a free port and a data folder the postgres OS user can reach."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = Path("/tmp") / f"cl_sweep_pg_test_{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "CL_SWEEP_TEST_POSTGRES_URL"}
    env.update(CL_SWEEP_PG_PORT=str(port), CL_SWEEP_PG_DIR=str(folder), PYTHONPATH=str(REPO / "tests"))
    yield env
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)
    Path(f"{folder}.lock").unlink(missing_ok=True)


def _running(env) -> bool:
    return subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True, timeout=120).returncode == 0


def _inner_tests(tmp_path: Path, body: str) -> Path:
    """A test file that starts the server as the shared-study fixture does, then runs ``body``."""
    path = tmp_path / "test_inner.py"
    path.write_text(textwrap.dedent(f"""
        import subprocess, time
        def test_uses_postgres():
            start = subprocess.run(["bash", {str(SCRIPT)!r}, "start"], capture_output=True, text=True)
            assert start.returncode == 0, start.stderr
            {body}
    """))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["passes", "fails"])
def test_a_server_the_run_started_is_stopped_when_it_ends(tmp_path, private_server_env, outcome):
    tests = _inner_tests(tmp_path, "assert True" if outcome == "passes" else "assert False, 'on purpose'")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pg_lifetime", "-p", "no:cacheprovider", "-q", str(tests)],
        env=private_server_env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == (0 if outcome == "passes" else 1), proc.stdout + proc.stderr
    assert not _running(private_server_env)


@pytest.mark.slow
def test_a_server_the_run_started_is_stopped_on_ctrl_c(tmp_path, private_server_env):
    tests = _inner_tests(tmp_path, "time.sleep(300)")
    # A test run launched in the background by a shell without job control (`make test &` in a script)
    # inherits SIGINT ignored, and Python then keeps ignoring it: give the inner run a terminal's default.
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "pg_lifetime", "-p", "no:cacheprovider", "-q", str(tests)],
        env=private_server_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 300
        while not _running(private_server_env):
            assert proc.poll() is None and time.monotonic() < deadline, "the inner run never started its server"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in out, out
    assert not _running(private_server_env)


@pytest.mark.slow
def test_a_server_already_running_is_left_running(tmp_path, private_server_env):
    assert subprocess.run(["bash", str(SCRIPT), "start"], env=private_server_env, capture_output=True, timeout=600).returncode == 0
    tests = _inner_tests(tmp_path, "assert True")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pg_lifetime", "-p", "no:cacheprovider", "-q", str(tests)],
        env=private_server_env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _running(private_server_env)  # `make postgres` started it: the user stops it


@pytest.mark.slow
def test_a_server_another_run_started_meanwhile_is_left_running(tmp_path, private_server_env):
    """Two test runs on one machine (two checkouts): the one that did not start the server never stops it,
    even when the server came up after it began (as the other run's shared-study tests start it)."""
    tests = tmp_path / "test_inner.py"
    tests.write_text(textwrap.dedent(f"""
        import os, subprocess
        def test_another_run_starts_the_server_meanwhile():
            env = {{**os.environ, "CL_SWEEP_PG_STARTED_BY": "another-run"}}
            start = subprocess.run(["bash", {str(SCRIPT)!r}, "start"], env=env, capture_output=True, text=True)
            assert start.returncode == 0, start.stderr
    """))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pg_lifetime", "-p", "no:cacheprovider", "-q", str(tests)],
        env=private_server_env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _running(private_server_env)  # not this run's server: the other run stops it
