"""The analysis API (`cl_sweep.analysis.load / summarize / best`) on real stored results."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cl_sweep import analysis
from cl_sweep.results import find_result_files

REPO = Path(__file__).resolve().parents[1]
HARD_ASH = REPO / "results" / "a6" / "split_mnist" / "hard_ash"  # 402 grid points, every optimizer


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    jobs, problems = analysis.load(HARD_ASH)
    return jobs, problems, analysis.summarize(jobs)


def test_load_reads_every_file_once_with_its_matrices(frames) -> None:
    jobs, problems, _ = frames
    assert len(jobs) == sum(1 for _ in find_result_files(HARD_ASH)) == 402 and problems.empty
    row = jobs.iloc[0]
    assert len(row["accuracy_matrix"]) == row["n_seeds"] and row["accuracy_matrix"][0].shape == (5, 5)
    assert all(a is None or 0 < a < 100 for a in row["active_fraction"])  # percent, after the last task


def test_best_gives_table2_and_table1(frames) -> None:
    _, _, points = frames
    cells = analysis.best(points)
    stored = pd.read_csv(REPO / "tables" / "split_mnist" / "table2.csv").query("activation == 'hard_ash'")
    got = cells.set_index("optimizer")
    for _, cell in stored.iterrows():  # the stored Table 2 (make tables over every result) agrees
        assert got.loc[cell["optimizer"], "mean"] == pytest.approx(cell["mean"])
        assert got.loc[cell["optimizer"], "std"] == pytest.approx(cell["std"])
    (row,) = analysis.best(points, per=("benchmark", "activation")).itertuples()
    table1 = pd.read_csv(REPO / "tables" / "split_mnist" / "table1.csv").query("activation == 'hard_ash'").iloc[0]
    assert (row.optimizer, row.mean) == (table1["optimizer"], pytest.approx(table1["mean"]))
    with pytest.raises(ValueError, match=r"unknown column\(s\) nope"):
        analysis.best(points, per=("benchmark", "nope"))


def test_problems_frame_names_the_bad_file(tmp_path: Path) -> None:
    shutil.copytree(HARD_ASH / "sgd", tmp_path / "sgd")
    bad = tmp_path / "broken" / "result.json"
    bad.parent.mkdir()
    bad.write_text('{"schema": 2, "status"')
    jobs, problems = analysis.load(tmp_path)
    assert len(jobs) == 18 and problems["path"].tolist() == [str(bad)]
    assert problems["reason"].iloc[0]


def test_metrics_come_from_the_pooled_seeds(frames) -> None:
    from cl_sweep.analysis import metrics, tables

    _, _, points = frames
    t = tables.metrics_table(points).data.set_index("optimizer")
    top = analysis.best(points).set_index("optimizer").loc["adagrad"]
    point = points[(points["optimizer"] == "adagrad") & (points["hp_key"] == top["hp_key"])].iloc[0]
    forgetting = [metrics.forgetting(m) for m in point["accuracy_matrix"]]
    assert t.loc["adagrad", "forgetting_mean"] == pytest.approx(100 * np.mean(forgetting))
    assert t.loc["adagrad", "seeds"] == point["n_seeds"] == 5


@pytest.mark.slow
def test_the_readme_lines_rebuild_table2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python lines, run as written from the repository root over every stored result,
    give the stored Table 2's numbers (the whole table, cell for cell)."""
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "from cl_sweep import analysis" in b]
    monkeypatch.chdir(REPO)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    cells = scope["cells"]
    stored = pd.read_csv(REPO / "tables" / "split_mnist" / "table2.csv")
    ours = cells[cells["benchmark"] == "split_mnist"].set_index(["activation", "optimizer"])
    for _, cell in stored.iterrows():
        assert ours.loc[(cell["activation"], cell["optimizer"]), "mean"] == pytest.approx(cell["mean"])


def test_presets_that_share_grid_points_pool_only_by_choice() -> None:
    """`+sweep=ewc_baselines strategy=none` re-ran three ReLU + SGD points of A.6: pooled by default, and said."""
    relu_sgd = REPO / "results" / "a6" / "split_mnist" / "relu" / "sgd"
    jobs, _ = analysis.load(relu_sgd, REPO / "results" / "ewc_baselines")
    pooled = analysis.summarize(jobs)
    shared = pooled[pooled["sources"].map(len) > 1]
    assert len(shared) == 3 and set(shared["sources"]) == {("a6", "ewc_baselines")}
    apart = analysis.summarize(jobs, pool="none")
    assert len(apart) == len(pooled) + 3 and set(apart["sources"].map(len)) == {1}
    for hp_key in shared["hp_key"]:
        a6, ewc = (apart[(apart["hp_key"] == hp_key) & (apart["sources"] == (s,))] for s in ("a6", "ewc_baselines"))
        assert len(a6) == len(ewc) == 1
        together = shared[shared["hp_key"] == hp_key].iloc[0]
        assert together["n_seeds"] == len(set(a6.iloc[0]["seeds"]) | set(ewc.iloc[0]["seeds"]))
    with pytest.raises(ValueError, match="no result comes from 'a7'"):
        analysis.summarize(jobs, pool=["a6", "a7"])


def test_per_seed_rows_carry_the_stored_metrics(frames) -> None:
    """One row per seed, its metrics as the file stores them (nothing recomputed), equal to what
    cl_sweep.analysis.metrics gives from the same seed's matrix."""
    import json

    from cl_sweep.analysis import metrics

    jobs, _, _ = frames
    seeds = analysis.per_seed(jobs)
    assert len(seeds) == int(jobs["n_seeds"].sum()) and {"seed", "forgetting", "accuracy_matrix"} <= set(seeds.columns)
    row = seeds.iloc[7]
    stored = json.loads(Path(row["path"]).read_text())
    i = stored["seeds"].index(row["seed"])
    assert row["forgetting"] == stored["forgetting"][i] and row["backward_transfer"] == stored["backward_transfer"][i]
    assert row["average_accuracy"] == stored["average_accuracy"][i][-1]
    assert row["final_accuracy"] == pytest.approx(100 * stored["final_accuracy"][i])
    assert row["forgetting"] == pytest.approx(metrics.forgetting(row["accuracy_matrix"]))


def test_schema1_files_get_their_metrics_from_the_loader(tmp_path: Path) -> None:
    """A file written before the metrics were stored (schema 1) gets them computed in one place, the loader."""
    import json

    from cl_sweep.analysis import metrics

    src = next(iter(find_result_files(HARD_ASH)))
    result = json.loads(src.read_text())
    old = {k: v for k, v in result.items() if k not in ("average_accuracy", "forgetting", "backward_transfer", "active_fraction")}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "result.json").write_text(json.dumps({**old, "schema": 1}))
    jobs, problems = analysis.load(tmp_path)
    assert problems.empty
    (row,) = analysis.per_seed(jobs).head(1).itertuples()
    assert row.forgetting == pytest.approx(result["forgetting"][0]) == pytest.approx(metrics.forgetting(row.accuracy_matrix))


@pytest.mark.slow
def test_the_readme_figure_lines_draw_from_the_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python lines of the Figures section, run as written where `results` is the stored folder."""
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "plots.table2_heatmap" in b]
    (tmp_path / "results").symlink_to(REPO / "results")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    for png in ("table2.png", "best_matrices.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
