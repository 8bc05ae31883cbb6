"""Tests of the Table 2 heatmap (cl_sweep.analysis.plots)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from cl_sweep.analysis import paper, plots


def best_frame(benchmark: str = "split_mnist") -> pd.DataFrame:
    """A small `best_per_cell`-shaped frame: paper-like values, a diverged and an extra cell."""
    rows = []
    for act in ("ash", "hard_ash", "relu"):
        for opt in paper.OPTIMIZER_ORDER:
            ref = paper.PAPER_TABLE2[act][opt]
            rows.append((benchmark, act, opt, ref.mean + 1.0, ref.std, True))
    rows.append((benchmark, "lwta", "sgd", math.nan, math.nan, False))  # every point diverged
    rows.append((benchmark, "elephant", "adam", 61.0, 0.8, False))  # not in the paper, partial
    return pd.DataFrame(rows, columns=["benchmark", "activation", "optimizer", "mean", "std", "complete"])


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_table2_heatmap_writes_a_png(tmp_path: Path) -> None:
    path = plots.table2_heatmap(best_frame(), tmp_path / "sub" / "table2_heatmap.png")
    assert path == tmp_path / "sub" / "table2_heatmap.png"
    width, height = png_size(path)
    assert 1200 <= width <= 4000 and 600 <= height <= 3000
    assert width > height  # two panels side by side
    assert 20_000 < path.stat().st_size < 5_000_000
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width)
    assert image.std() > 0.05  # not a blank canvas


def test_table2_heatmap_other_benchmark_and_selection(tmp_path: Path) -> None:
    both = pd.concat([best_frame(), best_frame("permuted_mnist")], ignore_index=True)
    with pytest.raises(ValueError, match="several benchmarks"):
        plots.table2_heatmap(both, tmp_path / "x.png")
    path = plots.table2_heatmap(both, tmp_path / "p.png", benchmark="permuted_mnist")
    width, height = png_size(path)
    assert width > height


def test_table2_heatmap_empty_frame(tmp_path: Path) -> None:
    empty = best_frame().iloc[0:0]
    path = plots.table2_heatmap(empty, tmp_path / "empty.png")
    assert png_size(path)[0] > 0
