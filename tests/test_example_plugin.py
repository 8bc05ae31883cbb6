"""examples/plugin, a researcher's package with a new activation and optimizer, installed with pip and
found through its `cl_sweep.plugins` entry point: swept through the population launcher on a real
MNIST slice, then aggregated by `make tables RESULTS=...`, which finds its rows.

The package is pip-installed into a folder of its own (``--target``) that the subprocesses put on
their path, so its entry point is visible to them only, never to the other tests of this run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    site = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-qq", "--no-deps", "--target", str(site),
         str(REPO / "examples" / "plugin")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(site.glob("cl_sweep_example_plugin-*.dist-info/entry_points.txt"))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


@pytest.mark.slow
def test_installed_plugin_sweeps_through_the_population_launcher_and_reaches_the_tables(installed, tmp_path):
    sweep = subprocess.run(
        [sys.executable, "-m", "cl_sweep", "--multirun", "activation=shifted_relu", "activation.shift=0.1,0.2,0.4",
         "optimizer=adagrad_wd", "hydra/launcher=population", "benchmark.limit_per_task=64", "n_seeds=2",
         "progress=false", "hydra.sweep.dir=sweep"],
        cwd=tmp_path, env=installed, capture_output=True, text=True, timeout=600,
    )
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    assert "population 1/1: shifted_relu + adagrad_wd, 3 jobs" in sweep.stdout + sweep.stderr  # one program, one population
    # Hydra's basic sweeper: the population launcher shows the sweep's line itself
    assert "sweep done: 3/3 jobs in " in sweep.stderr and ": 3 ok, 0 diverged, 0 failed; 0 already complete" in sweep.stderr
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").rglob("result.json"))]
    assert sorted(r["hyperparameters"]["activation.shift"] for r in results) == [0.1, 0.2, 0.4]
    assert all(r["activation"] == "shifted_relu" and r["optimizer"] == "adagrad_wd" and r["status"] == "ok" for r in results)

    make = subprocess.run(
        ["make", "-C", str(REPO), "tables", f"RESULTS={tmp_path / 'sweep'}", f"TABLES={tmp_path / 'tables'}",
         f"VENV={Path(sys.executable).parent.parent}"],
        env=installed, capture_output=True, text=True, timeout=300,
    )
    assert make.returncode == 0, make.stdout[-3000:] + make.stderr[-3000:]
    details = (tmp_path / "tables" / "split_mnist" / "details.md").read_text()
    assert "shifted_relu" in details and "adagrad_wd" in details
    best = max(results, key=lambda r: r["final_accuracy_mean"])
    assert f"{100 * best['final_accuracy_mean']:.1f}" in details


@pytest.mark.slow
def test_a_name_clash_with_an_installed_plugin_is_one_paragraph(installed, tmp_path):
    (tmp_path / "mine.py").write_text("import cl_sweep\ncl_sweep.register_activation('shifted_relu')(lambda x, *, shift=0.5: x)\n")
    proc = subprocess.run([sys.executable, "-m", "cl_sweep", "plugins=[mine]"], cwd=tmp_path, env=installed,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "activation 'shifted_relu' is already registered (by cl_sweep_example_plugin)" in proc.stderr
    assert "Traceback" not in proc.stderr
