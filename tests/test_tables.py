"""Tests of the result aggregation and table rendering (cl_sweep.analysis.tables) on synthetic results."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cl_sweep.analysis import paper, tables
from cl_sweep.results import validate_result, write_result


def make_result(
    activation: str = "hard_ash",
    optimizer: str = "adagrad",
    hyperparameters: dict[str, Any] | None = None,
    accuracy: list[float | None] | None = None,
    *,
    seeds: list[int] | None = None,
    n_seeds_requested: int = 5,
    early_stopped: bool = False,
    benchmark: str = "split_mnist",
    created: str = "2025-01-01T00:00:00+00:00",
    overrides: list[str] = (),
    tag: str | None = None,
) -> dict[str, Any]:
    """A valid schema-1 result; ``accuracy`` per seed as a fraction, None for a diverged seed;
    ``overrides`` are added to the job's own (e.g. ``+sweep=a6``), ``tag`` goes into its config."""
    accuracy = [0.7] * 5 if accuracy is None else accuracy
    seeds = list(range(len(accuracy))) if seeds is None else seeds
    diverged = [a is None for a in accuracy]
    finite = [a for a in accuracy if a is not None]
    status = "diverged" if any(diverged) else "ok"
    result = {
        "schema": 1,
        "status": status,
        "benchmark": benchmark,
        "activation": activation,
        "optimizer": optimizer,
        "hyperparameters": {"optimizer.lr": 0.01} if hyperparameters is None else hyperparameters,
        "config": {} if tag is None else {"tag": tag},
        "overrides": [*overrides, f"activation={activation}", f"optimizer={optimizer}"],
        "seeds": seeds,
        "n_seeds_requested": n_seeds_requested,
        "early_stopped": early_stopped,
        "diverged": diverged,
        "final_accuracy": accuracy,
        "final_accuracy_mean": None if status == "diverged" else float(np.mean(finite)),
        "final_accuracy_std": None if status == "diverged" else float(np.std(finite)),
        "accuracy_matrix": [[[a or 0.0]] for a in accuracy],
        "wall_time_s": 12.5,
        "versions": {},
        "created": created,
    }
    validate_result(result)
    return result


def put(root: Path, subdir: str, **kwargs: Any) -> Path:
    """Writes ``make_result(**kwargs)`` to ``root/subdir/result.json``."""
    return write_result(make_result(**kwargs), root / subdir)


def pipeline(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[Path, str]]]:
    jobs, bad = tables.load_results(root)
    summary = tables.summarize(jobs)
    return summary, tables.best_per_cell(summary), bad


def cell(best: pd.DataFrame, activation: str, optimizer: str) -> pd.Series:
    rows = best[(best["activation"] == activation) & (best["optimizer"] == optimizer)]
    assert len(rows) == 1
    return rows.iloc[0]


def kinds(items: list[tuple[str, str]], kind: str) -> list[str]:
    return [m for k, m in items if k == kind]


# ------------------------------------------------------------------------------------------
# Loading and aggregation


def test_load_results_row_per_job_in_percent(tmp_path: Path) -> None:
    put(tmp_path, "a", accuracy=[0.5, 0.7])
    jobs, bad = tables.load_results(tmp_path)
    assert bad == []
    assert list(jobs.columns) == list(tables.LOAD_COLUMNS)
    row = jobs.iloc[0]
    assert row["final_accuracy"] == pytest.approx([50.0, 70.0])
    assert row["mean"] == pytest.approx(60.0)
    assert row["hp_key"] == "optimizer.lr=0.01"
    assert row["hyperparameters"] == {"optimizer.lr": 0.01}
    assert row["n_seeds"] == 2 and row["n_seeds_requested"] == 5
    assert row["path"] == tmp_path / "a" / "result.json"


def test_hyperparameter_key_is_canonical() -> None:
    a = tables.hyperparameter_key({"optimizer.lr": 0.1, "activation.alpha": 3})
    b = tables.hyperparameter_key({"activation.alpha": 3.0, "optimizer.lr": 0.1})
    assert a == b == "activation.alpha=3, optimizer.lr=0.1"
    assert tables.hyperparameter_key({}) == ""
    assert tables.hyperparameter_key({"x": True, "y": [1, 2]}) == "x=true, y=[1,2]"


def test_population_std_and_best_grid_point(tmp_path: Path) -> None:
    put(tmp_path, "lr001", hyperparameters={"optimizer.lr": 0.01}, accuracy=[0.70, 0.72, 0.74, 0.76, 0.78])
    put(tmp_path, "lr01", hyperparameters={"optimizer.lr": 0.1}, accuracy=[0.60] * 5)
    summary, best, _ = pipeline(tmp_path)
    assert len(summary) == 2
    point = summary[summary["hp_key"] == "optimizer.lr=0.01"].iloc[0]
    assert point["mean"] == pytest.approx(74.0)
    # ddof=0: sqrt(mean([16, 4, 0, 4, 16])) = sqrt(8); ddof=1 would give sqrt(10).
    assert point["std"] == pytest.approx(math.sqrt(8.0))
    assert point["complete"] and point["status"] == "ok"

    win = cell(best, "hard_ash", "adagrad")
    assert win["hp_key"] == "optimizer.lr=0.01"
    assert win["hyperparameters"] == {"optimizer.lr": 0.01}
    assert win["mean"] == pytest.approx(74.0)
    assert win["n_grid_points"] == 2 and win["n_seeds_total"] == 10
    assert win["n_diverged"] == 0 and win["n_early_stopped"] == 0 and win["n_incomplete"] == 0


def test_best_is_per_cell(tmp_path: Path) -> None:
    put(tmp_path, "a", activation="relu", optimizer="adam", accuracy=[0.4] * 5)
    put(tmp_path, "b", activation="relu", optimizer="sgd", accuracy=[0.2] * 5)
    put(tmp_path, "c", activation="ash", optimizer="adam", accuracy=[0.7] * 5)
    _, best, _ = pipeline(tmp_path)
    # Paper order: ASH before ReLU, Adam before SGD.
    assert list(zip(best["activation"], best["optimizer"])) == [
        ("ash", "adam"), ("relu", "adam"), ("relu", "sgd")
    ]
    assert cell(best, "relu", "sgd")["mean"] == pytest.approx(20.0)


def test_jobs_of_one_grid_point_are_pooled_and_duplicate_seeds_kept_once(tmp_path: Path) -> None:
    put(tmp_path, "first", accuracy=[0.60, 0.62, 0.10], seeds=[0, 1, 2], created="2025-01-01T00:00:00+00:00")
    put(tmp_path, "second", accuracy=[0.64, 0.66, 0.68], seeds=[2, 3, 4], created="2025-01-02T00:00:00+00:00")
    summary, _, _ = pipeline(tmp_path)
    assert len(summary) == 1
    point = summary.iloc[0]
    assert point["n_jobs"] == 2
    assert point["seeds"] == [0, 1, 2, 3, 4]
    assert point["duplicate_seeds"] == [2]
    # Seed 2 comes from the newer job (64), not the older one (10).
    assert point["mean"] == pytest.approx(np.mean([60, 62, 64, 66, 68]))
    assert point["complete"]
    assert kinds(tables.problems(summary), "duplicate_seeds")


def test_sources_pool_only_when_asked_and_always_say_so(tmp_path: Path) -> None:
    put(tmp_path, "a", accuracy=[0.60, 0.62], seeds=[0, 1], n_seeds_requested=2, overrides=["+sweep=a6"])
    put(tmp_path, "b", accuracy=[0.70, 0.72], seeds=[1, 2], n_seeds_requested=2, overrides=["+sweep=extra"],
        created="2025-01-02T00:00:00+00:00")
    put(tmp_path, "c", accuracy=[0.50], seeds=[3], n_seeds_requested=1, overrides=["+sweep=extra"], tag="mine")
    put(tmp_path, "d", accuracy=[0.40], seeds=[4], n_seeds_requested=1, overrides=["+search=a6"])
    jobs, _ = tables.load_results(tmp_path)
    assert sorted(jobs["source"]) == ["a6", "extra", "mine", "search/a6"]  # a tag wins over the preset

    pooled = tables.summarize(jobs)  # the default: every source, as the stored tables
    (point,) = pooled.itertuples()
    assert point.sources == ("a6", "extra", "mine", "search/a6") and point.seeds == [0, 1, 2, 3, 4]
    assert point.duplicate_seeds == [1]
    said = kinds(tables.problems(pooled), "pooled")
    assert len(said) == 1 and "a6 + extra + mine + search/a6" in said[0]
    best = tables.best_per_cell(pooled)
    assert cell(best, "hard_ash", "adagrad")["sources"] == ("a6", "extra", "mine", "search/a6")
    assert "a6 + extra + mine + search/a6" in tables.details_table(best).to_markdown()

    apart = tables.summarize(jobs, pool="none")
    assert sorted(apart["sources"]) == [("a6",), ("extra",), ("mine",), ("search/a6",)]
    assert apart.set_index("sources").loc[[("a6",)], "mean"].item() == pytest.approx(61.0)
    assert not any(apart["duplicate_seeds"].map(len)) and not kinds(tables.problems(apart), "pooled")
    assert cell(tables.best_per_cell(apart), "hard_ash", "adagrad")["sources"] == ("extra",)  # 71 ± 1 wins

    two = tables.summarize(jobs, pool=["a6", "extra"])
    assert sorted(two["sources"]) == [("a6", "extra"), ("mine",), ("search/a6",)]
    assert two.set_index("sources").loc[[("a6", "extra")], "seeds"].item() == [0, 1, 2]
    assert tables.summarize(jobs, pool="a6,extra")["sources"].tolist() == two["sources"].tolist()

    for bad, why in (("a6,nope", r"no result comes from 'nope'"), ("a6", "a list needs two sources or more")):
        with pytest.raises(ValueError, match=rf"pool='{bad}' is not allowed: {why}; allowed: 'all' .* a6, extra, mine, search/a6"):
            tables.summarize(jobs, pool=bad)


def test_cli_pool_choice_and_bad_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    put(tmp_path, "r/a", accuracy=[0.60, 0.62], seeds=[0, 1], n_seeds_requested=2, overrides=["+sweep=a6"])
    put(tmp_path, "r/b", accuracy=[0.70, 0.72], seeds=[2, 3], n_seeds_requested=2, overrides=["+sweep=extra"])
    assert tables.main([str(tmp_path / "r"), "--out", str(tmp_path / "all"), "--no-plots"]) == 0
    assert "a6 + extra" in (tmp_path / "all" / "split_mnist" / "details.md").read_text()
    assert tables.main([str(tmp_path / "r"), "--out", str(tmp_path / "none"), "--no-plots", "--pool", "none"]) == 0
    grid = pd.read_csv(tmp_path / "none" / "split_mnist" / "grid_points.csv")
    assert sorted(grid["sources"]) == ["a6", "extra"] and sorted(grid["n_seeds"]) == [2, 2]
    capsys.readouterr()
    assert tables.main([str(tmp_path / "r"), "--out", str(tmp_path / "x"), "--pool", "a6,b7"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--pool: pool='a6,b7' is not allowed: no result comes from 'b7'" in err
    assert not (tmp_path / "x").exists()  # refused before anything is written


def test_diverged_grid_point_is_reported_and_never_chosen(tmp_path: Path) -> None:
    put(tmp_path, "good", hyperparameters={"optimizer.lr": 0.01}, accuracy=[0.5] * 5)
    # Its surviving seeds are better, but one seed diverged: the point must not win.
    put(tmp_path, "bad", hyperparameters={"optimizer.lr": 10.0}, accuracy=[0.9, 0.9, None])
    summary, best, _ = pipeline(tmp_path)
    bad = summary[summary["hp_key"] == "optimizer.lr=10"].iloc[0]
    assert bad["status"] == "diverged" and math.isnan(bad["mean"])
    assert bad["n_diverged_seeds"] == 1
    win = cell(best, "hard_ash", "adagrad")
    assert win["hp_key"] == "optimizer.lr=0.01" and win["mean"] == pytest.approx(50.0)
    assert win["n_diverged"] == 1
    diverged = kinds(tables.problems(summary), "diverged")
    assert len(diverged) == 1 and "optimizer.lr=10" in diverged[0] and "Hard ASH" in diverged[0]
    # A diverged point is final, so it is not also listed as incomplete.
    assert kinds(tables.problems(summary), "incomplete") == []


def test_cell_with_only_diverged_points(tmp_path: Path) -> None:
    put(tmp_path, "a", activation="sigmoid", optimizer="sgd", accuracy=[None])
    put(tmp_path, "b", accuracy=[0.7] * 5)
    summary, best, _ = pipeline(tmp_path)
    empty = cell(best, "sigmoid", "sgd")
    assert math.isnan(empty["mean"]) and empty["n_diverged"] == 1
    md = tables.write_tables(summary, tmp_path / "out")
    assert "diverged [1/3] (15.6 ± 1.0)" in md  # 1 of sigmoid+sgd's 3 A.6 grid points run
    assert "(all diverged)" in md


def test_incomplete_grid_point_is_flagged(tmp_path: Path) -> None:
    put(tmp_path, "full", hyperparameters={"optimizer.lr": 0.01}, accuracy=[0.70] * 5)
    put(tmp_path, "partial", hyperparameters={"optimizer.lr": 0.1}, accuracy=[0.95, 0.95])
    put(tmp_path, "alone", activation="relu", accuracy=[0.4, 0.5])
    summary, best, _ = pipeline(tmp_path)
    partial = summary[summary["hp_key"] == "optimizer.lr=0.1"].iloc[0]
    assert not partial["complete"]
    incomplete = kinds(tables.problems(summary), "incomplete")
    assert len(incomplete) == 2
    assert any("optimizer.lr=0.1" in m and "2 of 5 seeds" in m for m in incomplete)
    # A complete point beats a partial one even with a lower mean.
    win = cell(best, "hard_ash", "adagrad")
    assert win["hp_key"] == "optimizer.lr=0.01" and win["complete"] and win["n_incomplete"] == 1
    # A cell with nothing but a partial point still gets a number, marked incomplete.
    alone = cell(best, "relu", "adagrad")
    assert alone["mean"] == pytest.approx(45.0) and not alone["complete"]
    t2 = tables.table2(best).display
    assert t2.loc[t2["Activation"] == "ReLU", "Adagrad"].item().startswith(f"45.0 ± 5.0{tables.INCOMPLETE_MARK}")


def test_early_stopped_counts_as_complete_and_low_mean_does_not_win(tmp_path: Path) -> None:
    put(tmp_path, "full", hyperparameters={"optimizer.lr": 0.01}, accuracy=[0.70] * 5)
    put(tmp_path, "stopped", hyperparameters={"optimizer.lr": 1.0}, accuracy=[0.20], early_stopped=True)
    summary, best, _ = pipeline(tmp_path)
    stopped = summary[summary["hp_key"] == "optimizer.lr=1"].iloc[0]
    assert stopped["complete"] and stopped["early_stopped"] and stopped["n_seeds"] == 1
    assert kinds(tables.problems(summary), "incomplete") == []
    win = cell(best, "hard_ash", "adagrad")
    assert win["hp_key"] == "optimizer.lr=0.01"
    assert win["n_early_stopped"] == 1 and win["n_incomplete"] == 0
    assert win["n_seeds_total"] == 6


def test_early_stopped_one_seed_does_not_beat_full_point(tmp_path: Path) -> None:
    put(tmp_path, "full", hyperparameters={"optimizer.lr": 0.01}, accuracy=[0.70] * 5)
    put(tmp_path, "lucky", hyperparameters={"optimizer.lr": 1.0}, accuracy=[0.90], early_stopped=True)
    _, best, _ = pipeline(tmp_path)
    assert cell(best, "hard_ash", "adagrad")["hp_key"] == "optimizer.lr=0.01"


def test_bad_files_are_reported_and_the_rest_aggregated(tmp_path: Path) -> None:
    put(tmp_path, "good/1", accuracy=[0.7] * 5)
    put(tmp_path, "good/2", activation="relu", accuracy=[0.4] * 5)
    text = json.dumps(make_result())
    files = {
        "corrupt": "this is {not json",
        "truncated": text[: len(text) // 2],
        "foreign": json.dumps({"accuracy": 0.9, "model": "mlp"}),
        "schema2": json.dumps({**make_result(), "schema": 99}),
    }
    for name, content in files.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(content)
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "result.json").write_bytes(b"\xff\xfe\x00garbage\x80")

    jobs, bad = tables.load_results(tmp_path)
    assert len(jobs) == 2
    reasons = {p.parent.name: reason for p, reason in bad}
    assert set(reasons) == {*files, "binary"}
    assert all(p.name == "result.json" and p.is_file() for p, _ in bad)
    assert "not valid JSON" in reasons["corrupt"]
    assert "truncated" in reasons["truncated"]
    assert "schema" in reasons["foreign"] and "not a cl_sweep result" in reasons["foreign"]
    assert "schema 99" in reasons["schema2"]
    assert "UTF-8" in reasons["binary"]
    # The reason is not prefixed with the path a second time.
    assert not any(str(p) in r for p, r in bad)

    summary = tables.summarize(jobs)
    unreadable = kinds(tables.problems(summary, bad), "unreadable")
    assert len(unreadable) == 5 and any("schema2/result.json" in m for m in unreadable)


def test_values_the_schema_check_misses_are_reported(tmp_path: Path) -> None:
    wrong_scale = make_result(accuracy=[0.7] * 5)
    wrong_scale["final_accuracy"] = [70.0] * 5  # percent instead of a fraction
    (tmp_path / "pct").mkdir()
    (tmp_path / "pct" / "result.json").write_text(json.dumps(wrong_scale))
    jobs, bad = tables.load_results(tmp_path)
    assert jobs.empty
    assert len(bad) == 1 and "[0, 1]" in bad[0][1]


def test_empty_input_gives_empty_frames(tmp_path: Path) -> None:
    jobs, bad = tables.load_results(tmp_path)
    assert jobs.empty and bad == []
    summary = tables.summarize(jobs)
    best = tables.best_per_cell(summary)
    assert list(summary.columns) == list(tables.SUMMARY_COLUMNS)
    assert list(best.columns) == list(tables.BEST_COLUMNS)


# ------------------------------------------------------------------------------------------
# Rendering


def test_within_paper_uses_paper_precision() -> None:
    ref = paper.PAPER_TABLE2["ash"]["adagrad"]  # 76.4 ± 1.4
    assert tables.within_paper(75.0, ref) is True  # the edge counts as within
    assert tables.within_paper(74.96, ref) is True  # shown as 75.0
    assert tables.within_paper(74.94, ref) is False  # shown as 74.9
    assert tables.within_paper(77.8, ref) is True
    assert tables.within_paper(77.9, ref) is False
    assert tables.within_paper(math.nan, ref) is None
    assert tables.within_paper(70.0, None) is None


def test_table2_shows_paper_value_and_within_mark(tmp_path: Path) -> None:
    # Hard ASH + Adagrad: paper 78.3 ± 1.4, ours 78.0 -> within.
    put(tmp_path, "in", activation="hard_ash", optimizer="adagrad", accuracy=[0.77, 0.78, 0.79])
    # ASH + Adagrad: paper 76.4 ± 1.4, ours 70.0 -> outside.
    put(tmp_path, "out", activation="ash", optimizer="adagrad", accuracy=[0.70] * 5)
    put(tmp_path, "extra", activation="elephant", optimizer="adam", accuracy=[0.60] * 5)
    _, best, _ = pipeline(tmp_path)
    t2 = tables.table2(best)
    md = t2.to_markdown()
    assert f"78.0 ± 0.8{tables.INCOMPLETE_MARK} {tables.WITHIN} [1/18] (78.3 ± 1.4)" in md
    assert f"70.0 ± 0.0 {tables.OUTSIDE} [1/18] (76.4 ± 1.4)" in md
    # Every paper row and column is shown, missing cells with a dash beside the paper's value.
    display = t2.display
    assert list(display["Activation"]) == [paper.activation_name(a) for a in paper.ACTIVATION_ORDER]
    assert list(display.columns[1:]) == [paper.optimizer_name(o) for o in paper.OPTIMIZER_ORDER]
    assert display.loc[display["Activation"] == "Sigmoid", "SGD"].item() == "— (15.6 ± 1.0)"
    # Ours without a paper value (Elephant) has no mark and no parentheses.
    assert display.loc[display["Activation"] == "Elephant", "Adam"].item() == "60.0 ± 0.0"

    data = t2.data.set_index(["activation", "optimizer"])
    assert data.loc[("hard_ash", "adagrad"), "within_paper_std"] is True
    assert data.loc[("ash", "adagrad"), "within_paper_std"] is False
    assert data.loc[("ash", "adagrad"), "diff"] == pytest.approx(70.0 - 76.4)
    assert data.loc[("ash", "adagrad"), "paper_std"] == pytest.approx(1.4)


def test_table1_and_optimizer_table(tmp_path: Path) -> None:
    put(tmp_path, "a", activation="hard_ash", optimizer="adagrad", accuracy=[0.78] * 5)
    put(tmp_path, "b", activation="hard_ash", optimizer="adam", accuracy=[0.60] * 5)
    put(tmp_path, "c", activation="relu", optimizer="adam", accuracy=[0.50] * 5)
    put(tmp_path, "d", activation="swish", optimizer="adam", accuracy=[0.52] * 5)
    _, best, _ = pipeline(tmp_path)

    t1 = tables.table1(best).display.set_index("Activation")
    assert list(t1.index) == ["Hard ASH", "ReLU", "Swish"]  # only activations we ran
    assert t1.loc["Hard ASH", "Optimizer"] == "Adagrad"
    assert t1.loc["Hard ASH", "Paper"] == "78.3 ± 1.4"
    assert t1.loc["Hard ASH", "Within"] == tables.WITHIN
    assert t1.loc["ReLU", "Paper"] == "49.2 ± 7.9"  # as printed in Table 1, not Table 2's 9.7
    # Swish is not in the printed Table 1: the best of its Table 2 row, marked.
    assert t1.loc["Swish", "Paper"] == f"51.9 ± 2.8{tables.DERIVED_MARK}"
    assert t1.loc["Swish", "Paper optimizer"] == "SGDM"
    assert "EWC 61" in tables.table1(best).to_markdown()

    opt = tables.optimizer_table(best).display.set_index("Optimizer")
    assert list(opt.index) == ["Adagrad", "Adam"]
    assert opt.loc["Adam", "Activation"] == "Hard ASH"
    assert opt.loc["Adam", "Ours"] == "60.0 ± 0.0"
    assert opt.loc["Adam", "Paper"] == "71.6 ± 1.6"
    assert opt.loc["Adam", "Within"] == tables.OUTSIDE


def test_details_table(tmp_path: Path) -> None:
    put(tmp_path, "a", hyperparameters={"optimizer.lr": 0.01, "activation.k": 8}, accuracy=[0.78] * 5)
    put(tmp_path, "b", hyperparameters={"optimizer.lr": 0.1, "activation.k": 8}, accuracy=[0.70] * 5)
    put(tmp_path, "c", hyperparameters={"optimizer.lr": 1.0, "activation.k": 8}, accuracy=[None])
    put(tmp_path, "d", hyperparameters={"optimizer.lr": 2.0, "activation.k": 8}, accuracy=[0.1], early_stopped=True)
    _, best, _ = pipeline(tmp_path)
    row = tables.details_table(best).display.iloc[0]
    assert row["Winning hyperparameters"] == "activation.k=8, optimizer.lr=0.01"
    assert row["Grid points"] == "4/18" and row["Seeds run"] == "12"  # of the A.6 grid's 18
    assert row["Diverged"] == "1" and row["Early-stopped"] == "1" and row["Incomplete"] == "0"


def test_latex_escape() -> None:
    out = tables.latex_escape("optimizer.lr=0.1 & 50% ± 1 ✓ ✗ — †")
    assert r"optimizer.lr=0.1 \& 50\% $\pm$ 1 \checkmark $\times$ --- $^\dagger$" == out


def test_write_tables_writes_md_csv_tex(tmp_path: Path) -> None:
    put(tmp_path / "results", "a", accuracy=[0.78] * 5)
    put(tmp_path / "results", "b", activation="ash", accuracy=[0.60] * 5)
    jobs, bad = tables.load_results(tmp_path / "results")
    out = tmp_path / "tables"
    md = tables.write_tables(tables.summarize(jobs), out, bad_files=bad)
    for name in ("table2", "table1", "optimizers", "details"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
        assert (out / f"{name}.md").read_text() in md
    assert (out / "tables.md").read_text() == md
    assert "## Problems" in md and "None." in md
    t2 = pd.read_csv(out / "table2.csv")
    assert {"activation", "optimizer", "mean", "std", "paper_mean", "paper_std", "diff", "within_paper_std"} <= set(t2.columns)
    assert len(t2) == len(paper.PAPER_ACTIVATIONS) * len(paper.OPTIMIZER_ORDER)
    tex = (out / "table2.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\checkmark" in tex and r"$\pm$" in tex
    assert "✓" not in tex and "±" not in tex
    assert (out / "grid_points.csv").is_file() and (out / "problems.csv").is_file()


# ------------------------------------------------------------------------------------------
# CLI


def test_cli_good_data_nested_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    put(root, "sweep/2025-01-01/hard_ash/adagrad/0", accuracy=[0.78] * 5)
    put(root, "deeper/still/ash/adagrad/lr0.1/0", activation="ash", accuracy=[0.76] * 5)
    out = tmp_path / "tables"
    assert tables.main([str(root), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "Table 2" in stdout and "Hard ASH" in stdout and "## Problems" in stdout
    assert "78.0 ± 0.0 ✓ [1/18] (78.3 ± 1.4)" in stdout and "76.0 ± 0.0 ✓ [1/18] (76.4 ± 1.4)" in stdout
    assert (out / "split_mnist" / "table2.md").is_file()
    assert (out / "split_mnist" / "table2_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_bad_files_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    put(tmp_path, "good", accuracy=[0.78] * 5)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "result.json").write_text('{"schema": 1, "sta')
    assert tables.main([str(tmp_path), "--out", str(tmp_path / "t"), "--no-plots"]) == 0
    captured = capsys.readouterr()
    assert "bad/result.json" in captured.out and "not valid JSON" in captured.out
    assert "1 of 2 result files could not be read" in captured.err
    assert not (tmp_path / "t" / "table2_heatmap.png").exists()


def test_cli_empty_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tables.main([str(tmp_path), "--no-plots", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no result.json files under" in err and str(tmp_path) in err


def test_cli_missing_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tables.main([str(tmp_path / "nope"), "--no-plots"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_all_files_bad_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "result.json").write_text("{}")
    assert tables.main([str(tmp_path), "--no-plots", "--out", str(tmp_path / "t")]) == 2
    assert "none of the 1 result files could be read" in capsys.readouterr().err


def test_cli_unknown_benchmark_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    put(tmp_path, "a", benchmark="permuted_mnist")
    assert tables.main([str(tmp_path), "--no-plots", "--benchmark", "split_mnist", "--out", str(tmp_path / "t")]) == 2
    assert "found: permuted_mnist" in capsys.readouterr().err
    assert tables.main([str(tmp_path), "--no-plots", "--benchmark", "permuted_mnist",
                        "--out", str(tmp_path / "t")]) == 0
    assert "No paper values" in capsys.readouterr().out


def test_module_entry_point_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cl_sweep.analysis.tables", str(tmp_path), "--no-plots"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert "no result.json files" in proc.stderr


def test_no_jax_import() -> None:
    code = (
        "import sys, cl_sweep.analysis.tables, cl_sweep.analysis.plots, cl_sweep.analysis.paper; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a6_coverage_mark_only_on_partial_cells(tmp_path: Path) -> None:
    # ReLU + SGD has 3 A.6 grid points: all three run -> no mark; Sigmoid + SGD: 2 of 3 -> [2/3].
    for lr in (3e-4, 4e-4, 5e-4):
        put(tmp_path, f"relu{lr}", activation="relu", optimizer="sgd", hyperparameters={"optimizer.learning_rate": lr})
    for lr in (3e-4, 4e-4):
        put(tmp_path, f"sig{lr}", activation="sigmoid", optimizer="sgd", hyperparameters={"optimizer.learning_rate": lr})
    _, best, _ = pipeline(tmp_path)
    md = tables.table2(best).to_markdown()
    relu_line = next(line for line in md.splitlines() if line.startswith("| ReLU"))
    sigmoid_line = next(line for line in md.splitlines() if line.startswith("| Sigmoid"))
    assert "70.0 ± 0.0 ✗ (19.8 ± 4.0)" in relu_line and "[" not in relu_line
    assert "[2/3]" in sigmoid_line


def test_appendix_table_separates_presets_and_bias_correction(tmp_path: Path) -> None:
    def put_job(name, preset, accuracy, **kw):
        r = make_result(**kw, accuracy=accuracy)
        r["overrides"] = [f"+sweep={preset}", *r["overrides"]]
        write_result(r, tmp_path / name)

    put_job("a", "a7", [0.90] * 5, activation="relu", optimizer="sgd", benchmark="iid_mnist",
            hyperparameters={"optimizer.learning_rate": 4e-4})
    put_job("b", "a7_tuned", [0.97] * 5, activation="relu", optimizer="sgd", benchmark="iid_mnist",
            hyperparameters={"optimizer.learning_rate": 0.1})
    put_job("c", "a8", [0.72] * 5, activation="hard_ash", optimizer="adam",
            hyperparameters={"optimizer.learning_rate": 1e-5, "optimizer.bias_correction": True})
    put_job("d", "a8", [0.50] * 5, activation="hard_ash", optimizer="adam",
            hyperparameters={"optimizer.learning_rate": 1e-5, "optimizer.bias_correction": False})
    # a held-out re-run (benchmark.validation_fraction) of an A.8 point: not the paper's protocol, so
    # under test selection it neither wins the row nor counts among its grid points
    put_job("e", "a6", [0.80] * 5, activation="hard_ash", optimizer="adam",
            hyperparameters={"optimizer.learning_rate": 2e-5, "benchmark.validation_fraction": 0.1})
    jobs, _ = tables.load_results(tmp_path)
    table = tables.appendix_table(tables.summarize(jobs), jobs)
    got = {r["experiment"]: r for _, r in table.data.iterrows()}
    assert got["A.8/hard_ash_adam/bias_correction"]["grid_points"] == 1
    assert got["A.7/iid_relu/split_mnist_optimizer"]["mean"] == pytest.approx(90.0)
    assert got["A.7/iid_relu/iid_tuned"]["mean"] == pytest.approx(97.0)
    assert got["A.8/hard_ash_adam/bias_correction"]["mean"] == pytest.approx(72.0)
    assert got["A.8/hard_ash_adam/no_bias_correction"]["mean"] == pytest.approx(50.0)
    assert got["A.8/hard_ash_adam/no_bias_correction"]["within_paper_std"] is False  # paper 76.7 ± 1.5
    assert math.isnan(got["A.9/hard_ash_sgd/exp_decay"]["mean"])  # not run
    md = table.to_markdown()
    assert "90.0 ± 0.0" in md and "91.3 ± 2.5" in md


def test_metrics_table_reports_forgetting_bwt_and_sparsity(tmp_path: Path) -> None:
    r = make_result(accuracy=[0.6, 0.7])
    r["accuracy_matrix"] = [[[0.9, 0.0], [0.5, 0.7]], [[0.8, 0.0], [0.6, 0.8]]]
    write_result(r, tmp_path / "v1")
    r2 = make_result(activation="ash", accuracy=[0.6])
    r2.update(schema=2, accuracy_matrix=[[[1.0, 0.0], [0.8, 0.4]]], average_accuracy=[[1.0, 0.6]], forgetting=[0.2],
              backward_transfer=[-0.2], active_fraction=[[0.05, 0.07]])
    write_result(r2, tmp_path / "v2")
    jobs, _ = tables.load_results(tmp_path)
    t = tables.metrics_table(tables.summarize(jobs))
    got = {row["activation"]: row for _, row in t.data.iterrows()}
    # hard_ash (schema 1): forgetting recomputed from the matrices: seeds 0.4 and 0.2
    assert got["hard_ash"]["forgetting_mean"] == pytest.approx(30.0) and got["hard_ash"]["forgetting_std"] == pytest.approx(10.0)
    assert got["hard_ash"]["bwt_mean"] == pytest.approx(-30.0)
    assert math.isnan(got["hard_ash"]["active_fraction_mean"])  # not measured before schema 2
    assert got["ash"]["active_fraction_mean"] == pytest.approx(0.07)  # after the last task
    md = t.to_markdown()
    assert "30.0 ± 10.0" in md and "7.0 ± 0.0" in md


def test_metrics_table_back_fills_learning_accuracy_and_shows_schema_3_values(tmp_path: Path) -> None:
    r = make_result(accuracy=[0.6, 0.7])  # schema 1: learning accuracy from the diagonals, no forward transfer
    r["accuracy_matrix"] = [[[0.9, 0.0], [0.5, 0.7]], [[0.7, 0.0], [0.6, 0.8]]]
    write_result(r, tmp_path / "v1")
    r3 = make_result(activation="relu", accuracy=[0.6])
    r3.update(schema=3, accuracy_matrix=[[[1.0, 0.1], [0.8, 0.4]]], average_accuracy=[[1.0, 0.6]], forgetting=[0.2],
              backward_transfer=[-0.2], active_fraction=[[0.05, 0.07]], initial_accuracy=[[0.1, 0.05]],
              forward_transfer=[0.05], learning_accuracy=[0.7], class_accuracy=[[0.6] * 10], train_loss=[[0.3, 0.5]],
              peak_memory_mib=612.4, time_per_model_s=2.25)
    write_result(r3, tmp_path / "v3")
    t = tables.metrics_table(tables.summarize(tables.load_results(tmp_path)[0]))
    got = {row["activation"]: row for _, row in t.data.iterrows()}
    assert got["hard_ash"]["learning_accuracy_mean"] == pytest.approx(77.5)  # (0.9 + 0.7) / 2 and (0.7 + 0.8) / 2
    assert math.isnan(got["hard_ash"]["fwt_mean"]) and math.isnan(got["hard_ash"]["peak_memory_mib"])
    assert got["relu"]["fwt_mean"] == pytest.approx(5.0) and got["relu"]["learning_accuracy_mean"] == pytest.approx(70.0)
    assert (got["relu"]["peak_memory_mib"], got["relu"]["time_per_model_s"]) == (612.4, 2.25)
    rows = {line.split("|")[1].strip(): line for line in t.to_markdown().splitlines() if line.startswith("| ")}
    assert "| 5.0 ± 0.0 " in rows["ReLU"] and "| 612 " in rows["ReLU"] and "| 2.2 " in rows["ReLU"]
    cells = [c.strip() for c in rows["Hard ASH"].split("|")[1:-1]]
    assert cells[6] == "77.5 ± 2.5" and cells[7:] == ["—", "—", "—", "—"]  # FWT, active units, memory, time: none stored


def test_strategy_runs_stay_out_of_the_paper_tables_and_get_their_own(tmp_path: Path) -> None:
    put(tmp_path, "plain", accuracy=[0.78] * 5, hyperparameters={"optimizer.learning_rate": 2e-4})
    put(tmp_path, "ewc", accuracy=[0.85] * 5,
        hyperparameters={"optimizer.learning_rate": 2e-4, "strategy.name": "ewc", "strategy.lambda": 100.0})
    jobs, _ = tables.load_results(tmp_path)
    md = tables.write_tables(tables.summarize(jobs), tmp_path / "out", jobs=jobs)
    table2_line = next(line for line in md.splitlines() if line.startswith("| Hard ASH") and "78.3" in line)
    assert "78.0 ± 0.0" in table2_line and "85.0" not in table2_line  # Table 2: no strategy runs
    strat = tables.strategies_table(tables.summarize(jobs))
    row = strat.data.iloc[0]
    assert row["strategy"] == "ewc" and row["mean"] == pytest.approx(85.0) and row["without_strategy_mean"] == pytest.approx(78.0)
    assert "strategy.lambda=100" in strat.to_markdown()
    assert (tmp_path / "out" / "strategies.md").is_file()


def test_search_trials_never_win_a_grid_cell_and_get_their_own_table(tmp_path: Path) -> None:
    grid, search = tmp_path / "grid", tmp_path / "search"
    for lr, acc in ((1e-4, 0.47), (2e-4, 0.45)):
        put(grid, f"g{lr}", activation="hard_sigmoid", hyperparameters={"optimizer.learning_rate": lr}, accuracy=[acc] * 5,
            overrides=["+sweep=a6"])
    trials = ((3.1e-5, [0.58] * 5), (4.2e-4, [0.30] * 5), (7.7e-5, [0.52, 0.50]))  # the last one pruned below
    for i, (lr, acc) in enumerate(trials):
        path = put(search, f"t{i}", activation="hard_sigmoid", hyperparameters={"optimizer.learning_rate": lr},
                   accuracy=acc, overrides=["+search=a6_wide"])
        if i == 2:  # a pruned trial: two seeds stopped at a task boundary (tasks_trained), no final accuracy
            r = json.loads(path.read_text())
            r.update(status="pruned", tasks_trained=[1, 1], final_accuracy=[None, None], final_accuracy_mean=None,
                     final_accuracy_std=None)
            validate_result(r)
            path.write_text(json.dumps(r))
    jobs, _ = tables.load_results(grid, search)
    summary = tables.summarize(jobs)
    assert len(tables.plain_runs(summary)) == 2  # the grid's points only
    md = tables.write_tables(summary, tmp_path / "out", jobs=jobs)
    row2 = next(line for line in md.splitlines() if line.startswith("| Hard Sigmoid") and "(56.5 ± 1.2)" in line)
    assert "47.0 ± 0.0 ✗ [2/3] (56.5 ± 1.2)" in row2 and "58.0" not in row2  # Table 2 stays the grid's (2 of its 3 A.6 points)
    found = tables.search_table(summary)
    (row,) = found.data.to_dict("records")
    assert (row["grid_mean"], row["search_mean"], row["grid_points"]) == pytest.approx((47.0, 58.0, 2))
    assert (row["trials"], row["pruned"], row["within_paper_std"], row["diff"]) == (3, 1, False, pytest.approx(11.0))
    text = (tmp_path / "out" / "search.md").read_text()
    assert found.display.iloc[0, :7].tolist() == [
        "Hard Sigmoid", "Adagrad", "47.0 ± 0.0 [2]", "58.0 ± 0.0 ✗", "+11.0", "56.5 ± 1.2", "3 (1 pruned)"]
    assert "58.0 ± 0.0 ✗" in text and "3 (1 pruned)" in text
    assert "optimizer.learning_rate=3.1e-05" in text and (tmp_path / "out" / "search.csv").is_file()
    # sampled values shortened, but never a momentum, decay or b2 rounded up to 1
    assert tables._short_values("optimizer.b2=0.99975123, optimizer.momentum=0.9937, activation.k=38, x=0.000209231") == (
        "optimizer.b2=0.999751, optimizer.momentum=0.9937, activation.k=38, x=0.000209")

    # A folder of searches alone: they are its grid points, and there is nothing to set them beside.
    alone, _ = tables.load_results(search)
    alone = tables.summarize(alone)
    assert len(tables.plain_runs(alone)) == 3 and tables.search_table(alone) is None
    assert cell(tables.best_per_cell(tables.plain_runs(alone)), "hard_sigmoid", "adagrad")["mean"] == pytest.approx(58.0)


def put_held_out(root: Path, subdir: str, lr: float, test: float, validation: float, fraction: float = 0.1) -> Path:
    """A 3-seed Hard ASH + Adagrad result of a job that held ``fraction`` of its examples out (schema 2)."""
    r = make_result(hyperparameters={"optimizer.learning_rate": lr, "benchmark.validation_fraction": fraction},
                    accuracy=[test] * 3, n_seeds_requested=3)
    r.update(schema=2, average_accuracy=[[test]] * 3, forgetting=[None] * 3, backward_transfer=[None] * 3,
             active_fraction=[[0.1]] * 3, validation_accuracy=[validation] * 3,
             validation_accuracy_matrix=[[[validation]]] * 3)
    return write_result(r, root / subdir)


def test_held_out_runs_stay_out_of_the_paper_cells_and_show_how_optimistic_test_selection_is(tmp_path: Path) -> None:
    for lr, acc in ((1e-4, 0.78), (2e-4, 0.76)):
        put(tmp_path / "a6", f"{lr}", hyperparameters={"optimizer.learning_rate": lr}, accuracy=[acc] * 5)
    put_held_out(tmp_path / "honest", "a", 1e-4, test=0.75, validation=0.80)  # best on validation
    put_held_out(tmp_path / "honest", "b", 2e-4, test=0.79, validation=0.74)  # best on test, above the stored grid
    jobs, _ = tables.load_results(tmp_path)
    summary = tables.summarize(jobs)
    assert len(tables.plain_runs(summary)) == 2 and len(tables.plain_runs(summary, "validation")) == 2
    assert set(tables.plain_runs(summary)["hp_key"]) == {"optimizer.learning_rate=0.0001", "optimizer.learning_rate=0.0002"}
    assert tables.plain_runs(summary, "validation")["val_mean"].notna().all()  # the held-out runs, the only ones it can pick
    md = tables.write_tables(summary, tmp_path / "out", jobs=jobs)
    row2 = next(line for line in md.splitlines() if line.startswith("| Hard ASH") and "(78.3 ± 1.4)" in line)
    assert "78.0 ± 0.0" in row2 and "79.0" not in row2  # Table 2: the stored grid, trained on every example

    table = tables.selection_table(summary)
    (row,) = table.data.to_dict("records")
    assert (row["stored_mean"], row["by_test_mean"], row["by_validation_mean"]) == pytest.approx((78.0, 79.0, 75.0))
    assert row["optimism"] == pytest.approx(4.0) and row["same_point"] is False and row["validation_fraction"] == 0.1
    assert row["by_validation_hyperparameters"].endswith("optimizer.learning_rate=0.0001")
    assert table.display.iloc[0].tolist() == [
        "Hard ASH", "Adagrad", "0.1", "2/18", "78.0 ± 0.0", "79.0 ± 0.0", "75.0 ± 0.0", "+4.0", "no"]
    assert (tmp_path / "out" / "selection.md").is_file()
    # validation-selected tables take the held-out runs (the others have no validation accuracy to pick by)
    tables.write_tables(summary, tmp_path / "val", jobs=jobs, select="validation")
    assert "75.0 ± 0.0" in (tmp_path / "val" / "table2.md").read_text()
    assert tables.selection_table(tables.summarize(tables.load_results(tmp_path / "a6")[0])) is None
    # a search beside both is set beside the grid on all examples, never beside the held-out re-run
    put(tmp_path / "search", "t", hyperparameters={"optimizer.learning_rate": 3e-4}, accuracy=[0.70] * 5,
        overrides=["+search=a6_wide"])
    (row,) = tables.search_table(tables.summarize(tables.load_results(tmp_path)[0])).data.to_dict("records")
    assert (row["grid_mean"], row["grid_points"], row["search_mean"]) == pytest.approx((78.0, 2, 70.0))


def test_best_views_say_how_much_of_the_row_was_run(tmp_path: Path) -> None:
    put(tmp_path, "a", activation="hard_ash", optimizer="adagrad", accuracy=[0.78] * 5)
    put(tmp_path, "b", activation="hard_ash", optimizer="adam", accuracy=[0.60] * 5)
    _, best, _ = pipeline(tmp_path)
    t1 = tables.table1(best).display.set_index("Activation")
    assert t1.loc["Hard ASH", "A.6 grid run"] == f"2/{6 * 67}"  # 6 activation settings x 67 optimizer settings
    opt = tables.optimizer_table(best).display.set_index("Optimizer")
    assert opt.loc["Adagrad", "A.6 grid run"] == f"1/{29 * 3}"  # 29 activation settings x 3 learning rates


def test_adam_without_bias_correction_stays_out_of_table2_but_fills_the_appendix(tmp_path: Path) -> None:
    put(tmp_path, "bc", activation="hard_ash", optimizer="adam", accuracy=[0.71] * 5,
        hyperparameters={"optimizer.learning_rate": 1e-5, "optimizer.bias_correction": True})
    put(tmp_path, "nobc", activation="hard_ash", optimizer="adam", accuracy=[0.77] * 5,
        hyperparameters={"optimizer.learning_rate": 1e-5, "optimizer.bias_correction": False})
    jobs, _ = tables.load_results(tmp_path)
    md = tables.write_tables(tables.summarize(jobs), tmp_path / "out", jobs=jobs)
    table2_line = next(line for line in md.splitlines() if line.startswith("| Hard ASH") and "71.6 ± 1.6" in line)
    assert "71.0 ± 0.0" in table2_line and "77.0" not in table2_line
    appendix = next(line for line in md.splitlines() if "without bias correction" in line)
    assert "77.0 ± 0.0" in appendix


def test_comparison_rows_per_method_and_epoch_budget_stay_out_of_the_paper_tables(tmp_path: Path) -> None:
    """Table 1's comparison rows: each method's best grid point per epoch budget, the cited figure
    beside it; SDMLP, FlyModel and multi-epoch runs never reach Tables 1 and 2."""
    plain = {"optimizer.learning_rate": 4e-4}
    put(tmp_path, "relu", activation="relu", optimizer="sgd", accuracy=[0.2] * 5, hyperparameters=plain)
    for lam, acc in ((10.0, 0.3), (100.0, 0.4)):
        put(tmp_path, f"ewc{lam}", activation="relu", optimizer="sgd", accuracy=[acc] * 5,
            hyperparameters={**plain, "strategy.name": "ewc", "strategy.lambda": lam})
    put(tmp_path, "ewc10ep", activation="relu", optimizer="sgd", accuracy=[0.5] * 5,
        hyperparameters={**plain, "strategy.name": "ewc", "strategy.lambda": 100.0, "benchmark.epochs_per_task": 10})
    put(tmp_path, "sdm", activation="sdm_topk", optimizer="sgd", accuracy=[0.95] * 5,
        hyperparameters={"optimizer.learning_rate": 0.5, "model.name": "sdmlp", "model.k": 10})
    put(tmp_path, "hard_ash_10ep", accuracy=[0.99] * 5,
        hyperparameters={"optimizer.learning_rate": 2e-4, "benchmark.epochs_per_task": 10})
    jobs, _ = tables.load_results(tmp_path)
    summary = tables.summarize(jobs)
    table = tables.comparison_table(summary)
    data = table.data.set_index(["method", "epochs_per_task"])
    assert data.loc[("EWC", 1), "mean"] == pytest.approx(40.0) and data.loc[("EWC", 1), "grid_points"] == 2
    assert data.loc[("EWC", 10), "mean"] == pytest.approx(50.0)
    assert data.loc[("EWC", 1), "cited"] == 61.0 and data.loc[("EWC", 1), "cited_epochs"] == 500
    assert data.loc[("SDMLP", 1), "mean"] == pytest.approx(95.0) and data.loc[("SDMLP", 1), "cited"] == 69.0
    assert "strategy.lambda=100" in table.to_markdown() and "500 epochs" in table.to_markdown()
    md = tables.write_tables(summary, tmp_path / "out", jobs=jobs)
    assert (tmp_path / "out" / "table1_comparison.md").is_file()
    table2 = tables.table2(tables.best_per_cell(tables.plain_runs(summary)))
    assert "95.0" not in table2.to_markdown() and "99.0" not in table2.to_markdown()
    assert "SDMLP (GABA Top-K)" not in md.split("## Table 1, comparison rows")[0].split("Continual-learning strategies")[0]


def test_cli_tabulates_every_benchmark_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --benchmark: every benchmark in its own folder, the paper's included, each with only its own
    rows and problems; an index page lists them and the unreadable files (once)."""
    put(tmp_path / "r", "a", accuracy=[0.78] * 5)
    put(tmp_path / "r", "a2", accuracy=[0.7] * 2, hyperparameters={"optimizer.lr": 0.02})  # incomplete: split_mnist's problem
    put(tmp_path / "r", "b", benchmark="split_fashion_mnist", accuracy=[0.61] * 5)
    put(tmp_path / "r", "c", benchmark="split_tfds:kmnist", accuracy=[0.55] * 5)
    (tmp_path / "r" / "bad").mkdir()
    (tmp_path / "r" / "bad" / "result.json").write_text("{")
    assert tables.main([str(tmp_path / "r"), "--out", str(tmp_path / "t")]) == 0
    out = tmp_path / "t"
    assert not (out / "table2.md").exists() and not (out / "grid_points.csv").exists()  # nothing at the top but the index
    assert "78.0" in (out / "split_mnist" / "table2.md").read_text()
    assert "61.0" in (out / "split_fashion_mnist" / "table2.md").read_text()
    assert "55.0" in (out / "split_tfds_kmnist" / "table2.md").read_text()
    assert (out / "split_fashion_mnist" / "table2_heatmap.png").is_file()
    for folder, n_points in (("split_mnist", 2), ("split_fashion_mnist", 1), ("split_tfds_kmnist", 1)):
        grid = pd.read_csv(out / folder / "grid_points.csv")
        assert len(grid) == n_points and set(grid["benchmark"]) == {folder.replace("split_tfds_", "split_tfds:")}
    assert "Incomplete grid points (fewer seeds than requested) (1)" in (out / "split_mnist" / "problems.md").read_text()
    for folder in ("split_fashion_mnist", "split_tfds_kmnist"):  # not the other benchmark's problem, nor the bad file
        assert (out / folder / "problems.md").read_text().strip().endswith("None.")
        assert "[k/N]" not in (out / folder / "table2.md").read_text()  # A.6 is Split-MNIST's grid only
    assert "[k/N]" in (out / "split_mnist" / "table2.md").read_text()
    index = (out / "README.md").read_text()
    assert index.index("[split_mnist](split_mnist/tables.md)") < index.index("[split_fashion_mnist]")
    assert "Hard ASH + Adagrad: 78.0 ± 0.0" in index and "Unreadable result files (skipped) (1)" in index


def test_a9_decaying_sgd_fills_the_appendix_not_a_table2_column(tmp_path: Path) -> None:
    put(tmp_path, "sgd", optimizer="sgd", accuracy=[0.48] * 5)
    put(tmp_path, "a9", optimizer="sgd_exp_decay", accuracy=[0.69] * 5,
        hyperparameters={"optimizer.learning_rate": 0.01, "optimizer.decay_rate": 0.7})
    jobs, _ = tables.load_results(tmp_path)
    summary = tables.summarize(jobs)
    table2 = tables.table2(tables.best_per_cell(tables.plain_runs(summary)))
    assert "sgd_exp_decay" not in table2.to_markdown() and "69.0" not in table2.to_markdown()
    assert "69.0" in tables.appendix_table(summary, jobs).to_markdown()


def test_other_models_get_their_own_table_and_never_enter_table2(tmp_path: Path) -> None:
    import cl_sweep
    from cl_sweep.components.registry import MODELS, STRATEGIES

    paper_mlp = {"model.hidden_size": 1000, "model.weight_norm": [True, False], "optimizer.lr": 0.01}
    deep = {"model.hidden_size": [1000, 1000], "model.weight_norm": [True, True, False], "optimizer.lr": 0.01}
    put(tmp_path, "a", hyperparameters=paper_mlp, accuracy=[0.70] * 5)
    put(tmp_path, "b", hyperparameters=deep, accuracy=[0.90] * 5)  # better, but not the paper's model
    put(tmp_path, "c", hyperparameters={"model.name": "tiny_net_t", "model.width": 32, "optimizer.lr": 0.01},
        accuracy=[0.40] * 5)
    put(tmp_path, "d", hyperparameters={**paper_mlp, "strategy.name": "pull_t", "strategy.lambda": 1.0},
        accuracy=[0.75] * 5)

    @cl_sweep.register_model("tiny_net_t", label="Tiny net")
    def tiny_net(*, width: int = 32, input_size: int = 784, num_classes: int = 10):
        raise NotImplementedError  # never built: the tables only need its label

    @cl_sweep.register_strategy("pull_t", label="Pull to anchor")
    def pull(*, lambda_: float = 1.0):
        raise NotImplementedError

    try:
        summary, _, _ = pipeline(tmp_path)
        best = tables.best_per_cell(tables.plain_runs(summary))
        assert cell(best, "hard_ash", "adagrad")["mean"] == pytest.approx(70.0)  # the deep MLP's 90 stays out
        models = tables.models_table(summary)
        assert models is not None
        shown = models.display.set_index("Model")
        assert list(shown.index) == ["MLP", "Tiny net"]  # the built-in MLP's label, then the user's
        assert shown.loc["MLP", "Best"].startswith("90.0") and shown.loc["MLP", "Paper's MLP"].startswith("70.0")
        assert "model.hidden_size=[1000,1000]" in shown.loc["MLP", "Model hyperparameters"]
        assert shown.loc["Tiny net", "Best"].startswith("40.0") and "model.width=32" in shown.loc["Tiny net", "Model hyperparameters"]
        assert list(models.data["architecture"]) == ["mlp [1000, 1000]", "tiny_net_t"]
        strategies = tables.strategies_table(summary)
        assert strategies is not None and list(strategies.display["Strategy"]) == ["Pull to anchor"]
        assert tables.models_table(tables.summarize(tables.load_results(tmp_path / "a")[0])) is None  # only the paper's MLP
        text = tables.write_tables(summary, tmp_path / "out")
        assert (tmp_path / "out" / "models.md").exists() and "Other models" in text
    finally:
        MODELS.unregister("tiny_net_t")
        STRATEGIES.unregister("pull_t")


def test_pareto_front_rule() -> None:
    points = pd.DataFrame({
        "mean": [80.0, 78.0, 78.0, 70.0, 60.0, 75.0, np.nan, 79.0],
        "active_mean": [10.0, 5.0, 5.0, 6.0, 2.0, 5.0, 1.0, np.nan],
    })
    on = tables.pareto_front(points)
    # 80@10 and 60@2 are extremes; the two equal 78@5 dominate neither each other nor are dominated;
    # 70@6 loses to 78@5, 75@5 too; a NaN in either column is never on the front
    assert on.tolist() == [True, True, True, False, True, False, False, False]


def test_pareto_table_and_sparsity_points(tmp_path: Path) -> None:
    def put_v2(name: str, activation: str, accuracy: list[float], active: float, **kw: Any) -> None:
        r = make_result(activation=activation, accuracy=accuracy, hyperparameters={"activation.k": name}, **kw)
        r.update(schema=2, average_accuracy=[[a] for a in accuracy], forgetting=[None] * len(accuracy),
                 backward_transfer=[None] * len(accuracy), active_fraction=[[0.5, active]] * len(accuracy))
        write_result(r, tmp_path / name)

    put_v2("dense", "relu", [0.8] * 5, 0.5)
    put_v2("sparse", "topk_subtract", [0.7] * 5, 0.05)
    put_v2("worse", "topk_mask", [0.6] * 5, 0.10)  # beaten by sparse on both
    put_v2("partial", "lwta", [0.9] * 2, 0.01)  # 2 of 5 seeds, not early-stopped: not finished, left out
    put_v2("stopped", "hard_ash", [0.5] * 2, 0.02, early_stopped=True)  # finished by the early-stop rule: in
    write_result(make_result(activation="ash", hyperparameters={"activation.k": "v1"}), tmp_path / "v1")  # no active fraction
    summary = tables.summarize(tables.load_results(tmp_path)[0])
    assert summary.set_index("hp_key")["active_mean"].round(6).to_dict() == pytest.approx(
        {"activation.k=dense": 50.0, "activation.k=sparse": 5.0, "activation.k=worse": 10.0, "activation.k=partial": 1.0,
         "activation.k=stopped": 2.0, "activation.k=v1": math.nan}, nan_ok=True)
    points = tables.sparsity_candidates(summary)
    assert sorted(points["activation"]) == ["hard_ash", "relu", "topk_mask", "topk_subtract"]
    t = tables.pareto_table(summary)
    assert t.data["activation"].tolist() == ["relu", "topk_subtract", "hard_ash"]  # best accuracy first
    assert t.data["active_percent"].tolist() == pytest.approx([50.0, 5.0, 2.0])
    md = t.to_markdown()
    assert "Pareto front of 4 grid points" in md and "80.0 ± 0.0" in md and "2 (early-stopped)" in md
    assert "activation.k=sparse" in md
    tables.write_tables(summary, tmp_path / "out")
    assert (tmp_path / "out" / "pareto.md").read_text() == md


@pytest.mark.slow
def test_make_tables_rebuilds_the_stored_tables_file_for_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make tables` over the stored results writes exactly the committed tables/ (numbers and layout):
    a change to the analysis that moves any cell, or stored tables left stale, fails here."""
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "tables"
    monkeypatch.chdir(repo)  # as make runs it: the CSVs name result files by their path from the checkout
    assert tables.main(["results", "--out", str(out), "--no-plots"]) == 0
    stored = {p.relative_to(repo / "tables") for p in (repo / "tables").rglob("*") if p.is_file() and p.suffix != ".png"}
    written = {p.relative_to(out) for p in out.rglob("*") if p.is_file()}
    assert written == stored
    differ = [str(p) for p in sorted(stored) if (out / p).read_bytes() != (repo / "tables" / p).read_bytes()]
    assert differ == []
