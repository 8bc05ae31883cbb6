"""Grid results exported into Optuna studies, and `make dashboard` serving them on loopback.

The export is read back through Optuna's own API; the dashboard is the real optuna-dashboard
server, started by the Makefile target on a free port of 127.0.0.1 and read through its HTTP API.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from cl_sweep.analysis import tables

REPO = Path(__file__).resolve().parents[1]
# Real stored results: Hard ASH + Adagrad's 18 A.6 grid points (90 seeds of split MNIST).
CELL = REPO / "results" / "a6" / "split_mnist" / "hard_ash" / "adagrad"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export(tmp_path: Path, *roots: Path) -> tuple[str, subprocess.CompletedProcess]:
    storage = f"sqlite:///{tmp_path}/grid.db"
    proc = subprocess.run([sys.executable, "-m", "cl_sweep.analysis.tables", *map(str, roots), "--to-study", storage],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    return storage, proc


def test_stored_grid_exports_as_a_study(tmp_path: Path) -> None:
    root = tmp_path / "results"
    shutil.copytree(CELL, root / "hard_ash_adagrad")
    storage, proc = _export(tmp_path, root)
    assert proc.returncode == 0, proc.stderr
    assert "grid|split_mnist|hard_ash|adagrad: 18 trials" in proc.stdout
    study = optuna.load_study(study_name="grid|split_mnist|hard_ash|adagrad", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    summary = tables.summarize(tables.load_results(root)[0])
    assert len(study.trials) == len(summary) == 18
    by_key = {row["hp_key"]: row for _, row in summary.iterrows()}
    for t in study.trials:
        row = by_key[t.user_attrs["hp_key"]]
        assert t.state == TrialState.COMPLETE and t.value == pytest.approx(row["mean"])
        assert t.user_attrs["std"] == pytest.approx(row["std"]) and t.user_attrs["n_seeds"] == row["n_seeds"]
        assert set(t.params) == {"activation.alpha", "activation.beta", "activation.z_k",
                                 "optimizer.initial_accumulator_value", "optimizer.learning_rate"}
        assert t.params["activation.alpha"] == row["hyperparameters"]["activation.alpha"]
    z_k = study.trials[0].distributions["activation.z_k"]  # the values the cell's grid holds
    assert isinstance(z_k, CategoricalDistribution) and set(z_k.choices) == {2.2, 2.3, 2.4}
    best = max(summary["mean"])
    assert study.best_value == pytest.approx(best)
    # exporting again replaces the study: the same trials, not twice as many
    _, again = _export(tmp_path, root)
    assert again.returncode == 0, again.stderr
    assert len(optuna.load_study(study_name="grid|split_mnist|hard_ash|adagrad", storage=storage).trials) == 18


def test_a_diverged_grid_point_is_a_fail_trial(tmp_path: Path) -> None:
    from test_tables import put

    put(tmp_path / "r", "ok", hyperparameters={"optimizer.learning_rate": 0.1})
    put(tmp_path / "r", "nan", hyperparameters={"optimizer.learning_rate": 9.0}, accuracy=[0.7, None])
    storage, proc = _export(tmp_path, tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="grid|split_mnist|hard_ash|adagrad", storage=storage)
    states = {t.params["optimizer.learning_rate"]: t.state for t in study.trials}
    assert states == {0.1: TrialState.COMPLETE, 9.0: TrialState.FAIL}


def test_a_bad_storage_is_one_paragraph(tmp_path: Path) -> None:
    shutil.copytree(CELL, tmp_path / "r")
    _, proc = _export(tmp_path, tmp_path / "r")  # fine
    assert proc.returncode == 0
    bad = subprocess.run([sys.executable, "-m", "cl_sweep.analysis.tables", str(tmp_path / "r"), "--to-study", "nope://x"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "cl_sweep.analysis.tables: error: --to-study 'nope://x': cannot write the studies" in bad.stderr


@pytest.mark.slow
def test_make_dashboard_serves_the_studies_on_loopback(tmp_path: Path) -> None:
    shutil.copytree(CELL, tmp_path / "r")
    storage, proc = _export(tmp_path, tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    port = _free_port()
    server = subprocess.Popen(["make", "-s", "-C", str(REPO), "dashboard", f"STORAGE={storage}", f"PORT={port}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, summaries = time.monotonic() + 60, None
        while summaries is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    summaries = json.load(r)["study_summaries"]
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
                time.sleep(0.5)
        (study,) = summaries
        assert study["study_name"] == "grid|split_mnist|hard_ash|adagrad" and study["directions"] == ["maximize"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}?after=0", timeout=10) as r:
            detail = json.load(r)
        assert len(detail["trials"]) == 18 and all(t["state"] == "Complete" for t in detail["trials"])
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_make_dashboard_without_a_storage_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(["make", "-s", "-C", str(REPO), "dashboard", f"STORAGE=sqlite:///{tmp_path}/none.db"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"make dashboard: no study storage at {tmp_path}/none.db (run an Optuna sweep first, or give STORAGE=<url>)" in proc.stderr
