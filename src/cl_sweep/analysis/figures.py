"""`make figures`: every figure from stored results (PNG files under figures/).

    python -m cl_sweep.analysis.figures [RESULTS ...] [--out figures]

- ``table2_heatmap.png``: our Table 2 and its difference to the paper's;
- ``pareto_accuracy_sparsity.png``: every Split-MNIST grid point's final accuracy against its share of
  active hidden units, with the Pareto front (``tables/pareto.md`` lists it);
- ``accuracy_matrices.png``: the mean accuracy matrix of the best Split-MNIST configuration of
  each activation;
- ``fig2_permuted_zk.png`` / ``fig3_permuted_alpha.png``: the paper's A.10 figures, from the
  results of ``+sweep=a10_zk`` / ``+sweep=a10_alpha``;
- ``learning_curves_<benchmark>.png``: test accuracy during training (results of jobs run with
  ``eval_every``) of the best such configuration of each activation, task boundaries marked.
A figure whose results are missing is skipped with a note, never drawn empty.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from cl_sweep.analysis import paper, plots, tables


def _mean_matrix(matrices) -> np.ndarray:
    """The mean over seeds of their accuracy matrices (NaN where a task was not evaluated)."""
    return np.nanmean(np.array(list(matrices), float), axis=0)


def best_matrices(summary: pd.DataFrame, benchmark: str = paper.PAPER_BENCHMARK) -> list[tuple[str, np.ndarray]]:
    """(title, mean accuracy matrix) of the best configuration of each activation on ``benchmark``."""
    best = tables.best_per_cell(tables.plain_runs(summary))  # the paper's setting, as Table 2
    best = best[(best["benchmark"] == benchmark) & best["mean"].notna()]
    out = []
    for act in paper.paper_order(best["activation"], paper.ACTIVATION_ORDER):
        row = best[best["activation"] == act].sort_values("mean", ascending=False).iloc[0]
        point = summary[
            (summary["benchmark"] == benchmark) & (summary["activation"] == act)
            & (summary["optimizer"] == row["optimizer"]) & (summary["hp_key"] == row["hp_key"])
        ].iloc[0]
        title = f"{paper.activation_name(act)} + {paper.optimizer_name(row['optimizer'])}: {row['mean']:.1f}%"
        out.append((title, _mean_matrix(point["accuracy_matrix"])))
    return out


def best_curves(jobs: pd.DataFrame) -> dict[str, list[tuple[str, dict]]]:
    """Per benchmark, (title, curve averaged over seeds) of the best configuration of each activation
    among the grid points whose results have learning curves (``eval_every``); the seeds of a point
    whose evaluation steps differ from its first seed's are left out of its mean."""
    with_curves = jobs[jobs["curve"].map(lambda c: bool(c))]
    if with_curves.empty:
        return {}
    summary = tables.summarize(with_curves)
    best = tables.best_per_cell(tables.plain_runs(summary))
    best = best[best["mean"].notna()]
    out: dict[str, list[tuple[str, dict]]] = {}
    for benchmark in sorted(set(best["benchmark"])):
        cells = best[best["benchmark"] == benchmark]
        for act in paper.paper_order(cells["activation"], paper.ACTIVATION_ORDER):
            row = cells[cells["activation"] == act].sort_values("mean", ascending=False).iloc[0]
            point = with_curves[
                (with_curves["benchmark"] == benchmark) & (with_curves["activation"] == act)
                & (with_curves["optimizer"] == row["optimizer"]) & (with_curves["hp_key"] == row["hp_key"])
            ]
            seeds = [c for curves, diverged in zip(point["curve"], point["diverged"])
                     for c, d in zip(curves, diverged) if not d]
            seeds = [c for c in seeds if c["step"] == seeds[0]["step"]]
            if not seeds:
                continue

            def mean(key: str, seeds=seeds) -> np.ndarray:
                values = [[np.nan if v is None else v for v in c[key]] if key == "accuracy"
                          else [[np.nan if v is None else v for v in r] for r in c[key]] for c in seeds]
                return np.nanmean(np.array(values, float), axis=0)

            title = (f"{paper.activation_name(act)} + {paper.optimizer_name(row['optimizer'])}: {row['mean']:.1f}% "
                     f"({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
            out.setdefault(benchmark, []).append((title, {
                "step": seeds[0]["step"], "task": seeds[0]["task"], "accuracy": mean("accuracy"),
                "task_accuracy": mean("task_accuracy"),
            }))
    return out


def permuted_runs(jobs: pd.DataFrame, preset: str, vary: str) -> list[tuple[str, list]]:
    """(label, accuracy matrices) of every job of an A.10 preset, labelled by the varied key."""
    runs = []
    chosen = jobs[(jobs["preset"] == preset) & (jobs["benchmark"] == "permuted_mnist")]
    for _, job in chosen.sort_values(["activation", "hp_key"]).iterrows():
        if job["activation"] == "relu":
            label = "ReLU"
        else:
            hp = job["hyperparameters"]
            label = f"{paper.activation_name(job['activation'])} {vary}={hp.get(f'activation.{vary}')}"
            if vary == "alpha":
                label += f", z_k={hp.get('activation.z_k')}"
        runs.append((label, [m for m, d in zip(job["accuracy_matrix"], job["diverged"]) if not d]))
    hard = [r for r in runs if r[0] != "ReLU"]
    return hard + [r for r in runs if r[0] == "ReLU"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cl_sweep.analysis.figures", description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="*", default=["results"], help="folders of result.json files (default: results)")
    ap.add_argument("--out", default="figures", help="output folder (default: figures)")
    args = ap.parse_args(argv)
    for root in args.results:
        if not Path(root).exists():
            print(f"cl_sweep.analysis.figures: error: results folder {root!r} does not exist", file=sys.stderr)
            return 2
    jobs, bad = tables.load_results(*args.results)
    for path, reason in bad:
        print(f"cl_sweep.analysis.figures: skipped {path}: {reason}", file=sys.stderr)
    if jobs.empty:
        print("cl_sweep.analysis.figures: error: no readable result files", file=sys.stderr)
        return 2
    summary = tables.summarize(jobs)
    out = Path(args.out)
    written = []
    best = tables.best_per_cell(tables.plain_runs(summary))  # Table 2's cells, as make tables draws them
    if (best["benchmark"] == paper.PAPER_BENCHMARK).any():
        written.append(plots.table2_heatmap(best[best["benchmark"] == paper.PAPER_BENCHMARK], out / "table2_heatmap.png"))
        points = tables.sparsity_candidates(summary)
        if not points.empty:
            written.append(plots.pareto_scatter(
                points, out / "pareto_accuracy_sparsity.png",
                title=f"Split-MNIST: accuracy against sparsity, {len(points)} grid points and their Pareto front",
            ))
        cells = best_matrices(summary)
        if cells:
            written.append(plots.accuracy_matrix_heatmaps(
                cells, out / "accuracy_matrices.png",
                title="Split-MNIST: accuracy on each task (columns) after each task (rows), best configuration per activation",
            ))
    for preset, vary, name, title in (
        ("a10_zk", "z_k", "fig2_permuted_zk.png", "Permuted MNIST, Hard ASH + Adagrad: the amount of sparsity (z_k)"),
        ("a10_alpha", "alpha", "fig3_permuted_alpha.png", "Permuted MNIST, Hard ASH + Adagrad: gate steepness (alpha)"),
    ):
        runs = permuted_runs(jobs, preset, vary)
        if runs:
            written.append(plots.permuted_curves(runs, out / name, title=title))
        else:
            print(f"cl_sweep.analysis.figures: no results of +sweep={preset}; {name} skipped", file=sys.stderr)
    curves = best_curves(jobs)
    for benchmark, runs in curves.items():
        written.append(plots.learning_curves(
            runs, out / f"learning_curves_{tables.benchmark_folder(benchmark)}.png",
            title=f"{benchmark}: test accuracy during training, best configuration per activation (dotted: task ends)",
        ))
    if not curves:
        print("cl_sweep.analysis.figures: no results with learning curves (run with eval_every=N); "
              "learning_curves_<benchmark>.png skipped", file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
