"""`python -m cl_sweep.analysis.figures` draws every figure from stored results, skipping what has no data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cl_sweep.analysis import figures, tables
from cl_sweep.results import write_result


def result(activation, hp, matrix_per_seed, *, benchmark="split_mnist", preset=None, optimizer="adagrad"):
    finals = [float(np.nanmean([v for v in m[-1] if v is not None])) for m in matrix_per_seed]
    n = len(matrix_per_seed)
    return {
        "schema": 1, "status": "ok", "benchmark": benchmark, "activation": activation, "optimizer": optimizer,
        "hyperparameters": hp, "config": {}, "overrides": ([f"+sweep={preset}"] if preset else []) + [f"activation={activation}"],
        "seeds": list(range(n)), "n_seeds_requested": n, "early_stopped": False, "diverged": [False] * n,
        "final_accuracy": finals, "final_accuracy_mean": float(np.mean(finals)), "final_accuracy_std": float(np.std(finals)),
        "accuracy_matrix": matrix_per_seed, "wall_time_s": 1.0, "versions": {}, "created": "2026-01-01T00:00:00+00:00",
    }


def permuted(t, decay):
    return [[(1.0 - decay * (i - j)) if j in (0, i) else None for j in range(t)] for i in range(t)]


def test_make_figures_writes_every_figure(tmp_path: Path, capsys):
    root = tmp_path / "results"
    split = [[0.99, 0, 0, 0, 0], [0.9, 0.95, 0, 0, 0], [0.8, 0.8, 0.9, 0, 0], [0.7, 0.7, 0.8, 0.9, 0], [0.6, 0.6, 0.7, 0.8, 0.9]]
    v2 = result("hard_ash", {"activation.z_k": 2.3}, [split, split])
    v2.update(schema=2, average_accuracy=[[0.9] * 5] * 2, forgetting=[0.1, 0.1], backward_transfer=[-0.1, -0.1],
              active_fraction=[[0.1] * 5] * 2)  # schema 2 measures sparsity: the Pareto figure has a point
    write_result(v2, root / "split")
    for i, zk in enumerate((1.0, 2.0)):
        write_result(result("hard_ash", {"activation.z_k": zk}, [permuted(6, 0.05 * (i + 1))],
                            benchmark="permuted_mnist", preset="a10_zk"), root / f"zk{i}")
    write_result(result("relu", {}, [permuted(6, 0.1)], benchmark="permuted_mnist", preset="a10_zk"), root / "relu")
    out = tmp_path / "figures"
    assert figures.main([str(root), "--out", str(out)]) == 0
    for name in ("table2_heatmap.png", "accuracy_matrices.png", "fig2_permuted_zk.png", "pareto_accuracy_sparsity.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    assert not (out / "fig3_permuted_alpha.png").exists()  # no +sweep=a10_alpha results: skipped, not drawn empty
    err = capsys.readouterr().err
    assert "a10_alpha" in err
    assert not list(out.glob("learning_curves_*.png"))  # no result has curves: skipped with one line
    assert [line for line in err.splitlines() if "learning curves" in line] == [(
        "cl_sweep.analysis.figures: no results with learning curves (run with eval_every=N); "
        "learning_curves_<benchmark>.png skipped"
    )]
    runs = figures.permuted_runs(tables.load_results(root)[0], "a10_zk", "z_k")
    assert [label for label, _ in runs] == ["Hard ASH z_k=1.0", "Hard ASH z_k=2.0", "ReLU"]


def test_missing_folder_is_a_clear_error(tmp_path: Path, capsys):
    assert figures.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_learning_curves_of_a_real_run(curve_job, tmp_path: Path, capsys):
    """The results of a run with ``eval_every`` (and stored results without curves beside them): the
    learning-curve figure of its benchmark, averaged over the seeds of the best point per activation."""
    out = tmp_path / "figures"
    assert figures.main([str(curve_job.parent), "--out", str(out)]) == 0
    data = (out / "learning_curves_split_mnist.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "learning curves" not in capsys.readouterr().err
    [(benchmark, [(title, curve)])] = figures.best_curves(tables.load_results(curve_job.parent)[0]).items()
    result = json.loads((curve_job / "result.json").read_text())
    assert benchmark == "split_mnist" and title.startswith("Hard ASH + Adagrad") and "(2 seeds)" in title
    assert curve["step"] == result["curve"][0]["step"]
    np.testing.assert_allclose(curve["accuracy"], np.mean([c["accuracy"] for c in result["curve"]], axis=0))
