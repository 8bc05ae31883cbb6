"""Figures of the aggregated results (matplotlib, rendered off-screen to files)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps, colors
from matplotlib.figure import Figure

from cl_sweep.analysis import paper
from cl_sweep.analysis.paper import PaperValue
from cl_sweep.analysis.paper import within_paper

# A bare Figure (no pyplot) renders with Agg and never touches the global backend, so importing
# this module in a notebook or on a headless machine changes nothing there.

_NAN_COLOUR = "0.85"
# 10 classes, so chance is 10%: the accuracy scale starts there and is fixed so that heatmaps of
# different runs can be compared by eye.
_ACC_RANGE = (10.0, 100.0)
_MIN_DIFF_RANGE = 5.0


def _text_colour(rgba: tuple[float, float, float, float]) -> str:
    r, g, b, _ = rgba
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _single_benchmark(best_df: pd.DataFrame, benchmark: str | None) -> tuple[pd.DataFrame, str]:
    found = sorted(set(best_df["benchmark"])) if not best_df.empty else []
    if benchmark is None:
        if len(found) > 1:
            raise ValueError(f"best_df holds several benchmarks {found}; pass benchmark=")
        benchmark = found[0] if found else paper.PAPER_BENCHMARK
    return best_df[best_df["benchmark"] == benchmark], benchmark


def table2_heatmap(
    best_df: pd.DataFrame, path: str | os.PathLike, *, benchmark: str | None = None
) -> Path:
    """Draws Table 2 as two heatmaps: our best mean per cell, and ours minus the paper's.

    Left panel: best grid point's mean accuracy (%), annotated ``mean±std``. Right panel: the
    difference ours − paper in percentage points on a diverging colormap centred on 0, annotated
    with the difference, ✓/✗ for within/outside paper mean ± paper std, and the paper's value
    (left out for a benchmark the paper has no numbers for). Rows and columns are in the paper's
    order (all of its rows and columns, plus any others in the data); cells without a number are
    grey.

    Args:
        best_df: the frame from `cl_sweep.analysis.tables.best_per_cell` (columns benchmark, activation,
            optimizer, mean, std, complete).
        path: the PNG to write (parent folders are created).
        benchmark: which benchmark to draw; may be omitted when ``best_df`` holds only one.

    Returns:
        The path written.
    """
    best_df, benchmark = _single_benchmark(best_df, benchmark)
    ref = paper.PAPER_TABLE2 if benchmark == paper.PAPER_BENCHMARK else {}
    acts = paper.paper_order([*ref, *best_df["activation"]], paper.ACTIVATION_ORDER)
    opts = paper.paper_order(
        [*(o for row in ref.values() for o in row), *best_df["optimizer"]], paper.OPTIMIZER_ORDER
    )
    if not acts or not opts:
        raise ValueError(f"nothing to draw: no results for benchmark {benchmark!r}")
    shape = (len(acts), len(opts))
    ours, ours_std = np.full(shape, np.nan), np.full(shape, np.nan)
    ran = np.zeros(shape, dtype=bool)
    incomplete = np.zeros(shape, dtype=bool)
    ref_mean, ref_std = np.full(shape, np.nan), np.full(shape, np.nan)
    for r in best_df.itertuples(index=False):
        i, j = acts.index(r.activation), opts.index(r.optimizer)
        ours[i, j], ours_std[i, j], ran[i, j] = r.mean, r.std, True
        incomplete[i, j] = math.isfinite(r.mean) and not r.complete
    for i, a in enumerate(acts):
        for j, o in enumerate(opts):
            if (v := ref.get(a, {}).get(o)) is not None:
                ref_mean[i, j], ref_std[i, j] = v.mean, v.std

    # Without paper values the difference panel would be all grey, so it is left out.
    n_panels = 2 if ref else 1
    fig = Figure(
        figsize=(2.0 + n_panels * (2.0 + 1.3 * len(opts)), 1.6 + 0.62 * len(acts)),
        layout="constrained",
    )
    axes = fig.subplots(1, n_panels, sharey=True, squeeze=False)[0]
    ax_ours = axes[0]

    acc_cmap = colormaps["viridis"].with_extremes(bad=_NAN_COLOUR)
    acc_norm = colors.Normalize(*_ACC_RANGE)
    im = ax_ours.imshow(np.ma.masked_invalid(ours), cmap=acc_cmap, norm=acc_norm, aspect="auto")
    fig.colorbar(im, ax=ax_ours, label="final accuracy (%)", shrink=0.9, pad=0.02)
    for i in range(shape[0]):
        for j in range(shape[1]):
            if math.isfinite(ours[i, j]):
                text = f"{ours[i, j]:.1f}±{ours_std[i, j]:.1f}" + ("†" if incomplete[i, j] else "")
                colour = _text_colour(acc_cmap(acc_norm(ours[i, j])))
            else:
                text, colour = ("diverged" if ran[i, j] else "—"), "0.35"
            ax_ours.text(j, i, text, ha="center", va="center", fontsize=9.5, color=colour)
    ax_ours.set_title("Ours: best grid point, mean ± std over seeds (%)", pad=8)

    if ref:
        ax_diff = axes[1]
        diff = ours - ref_mean
        finite = np.isfinite(diff)
        lim = max(_MIN_DIFF_RANGE, float(np.abs(diff[finite]).max()) if finite.any() else 0.0)
        diff_cmap = colormaps["RdBu"].with_extremes(bad=_NAN_COLOUR)
        diff_norm = colors.TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)
        im2 = ax_diff.imshow(
            np.ma.masked_invalid(diff), cmap=diff_cmap, norm=diff_norm, aspect="auto"
        )
        fig.colorbar(im2, ax=ax_diff, label="ours − paper (percentage points)", shrink=0.9, pad=0.02)
        for i in range(shape[0]):
            for j in range(shape[1]):
                if finite[i, j]:
                    within = within_paper(ours[i, j], PaperValue(ref_mean[i, j], ref_std[i, j]))
                    main = f"{diff[i, j]:+.1f} {'✓' if within else '✗'}"
                    colour = _text_colour(diff_cmap(diff_norm(diff[i, j])))
                elif math.isfinite(ours[i, j]):
                    main, colour = "not in paper", "0.35"
                else:
                    main, colour = ("diverged" if ran[i, j] else "—"), "0.35"
                ax_diff.text(j, i - 0.12, main, ha="center", va="center", fontsize=10,
                             fontweight="bold", color=colour)
                if math.isfinite(ref_mean[i, j]):
                    ax_diff.text(j, i + 0.22, f"paper {ref_mean[i, j]:.1f}±{ref_std[i, j]:.1f}",
                                 ha="center", va="center", fontsize=7.5, color=colour)
        ax_diff.set_title("Ours − paper (pp); ✓ within paper mean ± std, ✗ outside", pad=8)

    act_labels = [paper.activation_name(a) for a in acts]
    opt_labels = [paper.optimizer_name(o) for o in opts]
    for ax in axes:
        ax.set_xticks(range(len(opts)), opt_labels)
        ax.xaxis.tick_top()
        ax.set_yticks(range(len(acts)), act_labels)
        ax.tick_params(length=0)
        # White gridlines between cells keep neighbouring similar colours apart.
        ax.set_xticks(np.arange(-0.5, len(opts)), minor=True)
        ax.set_yticks(np.arange(-0.5, len(acts)), minor=True)
        ax.grid(which="minor", color="white", linewidth=1.5)
        ax.tick_params(which="minor", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    suptitle = f"Final accuracy on {benchmark}: activation × optimizer"
    if ref:
        suptitle += " (paper Table 2)"
    if incomplete.any():
        suptitle += "   († fewer seeds than requested)"
    fig.suptitle(suptitle, fontsize=13)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def permuted_curves(runs: list[tuple[str, list]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Paper A.10's figures: accuracy on the newest task right after training it (plasticity) and on
    task 1 throughout (stability), one line per run, averaged over its seeds.

    Args:
        runs: (label, accuracy matrices of its seeds) pairs; a matrix may hold None for tasks
            that were not evaluated.
        path: the PNG to write.
        title: the figure's title.
    """
    from cl_sweep.analysis import metrics

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_p, ax_s = fig.subplots(1, 2, sharey=True)
    for label, matrices in runs:
        for ax, metric in ((ax_p, metrics.plasticity), (ax_s, metrics.stability)):
            curves = np.array([[np.nan if v is None else 100 * v for v in metric(m)] for m in matrices], float)
            mean = np.nanmean(curves, axis=0) if len(curves) else np.array([])
            style = {"color": "black", "linestyle": "--"} if label.lower().startswith("relu") else {}
            ax.plot(np.arange(1, len(mean) + 1), mean, label=label, linewidth=1.4, **style)
    ax_p.set_title("Newest task, right after its training (plasticity)")
    ax_s.set_title("Task 1, throughout training (stability)")
    for ax in (ax_p, ax_s):
        ax.set_xlabel("task")
        ax.grid(alpha=0.3)
    ax_p.set_ylabel("test accuracy (%)")
    ax_s.legend(loc="lower left", fontsize="small")
    return _save(fig, path, title, dpi=120)


def accuracy_matrix_heatmaps(cells: list[tuple[str, np.ndarray]], path: str | os.PathLike, *, title: str = "") -> Path:
    """One heatmap per run of its mean accuracy matrix (row i: accuracy on each task after task i).

    Args:
        cells: (title, mean T x T matrix in 0-1, NaN = not evaluated) pairs.
        path: the PNG to write.
        title: the figure's title.
    """
    fig, axes = _panels(len(cells), max_cols=4, size=(3.4, 3.3))
    cmap = colormaps["viridis"].with_extremes(bad=_NAN_COLOUR)
    norm = colors.Normalize(*_ACC_RANGE)
    image = None
    for ax, (name, matrix) in zip(axes, cells):
        pct = 100 * np.asarray(matrix, float)
        image = ax.imshow(np.ma.masked_invalid(pct), cmap=cmap, norm=norm)
        t = pct.shape[0]
        if t <= 10:
            for i in range(t):
                for j in range(t):
                    if np.isfinite(pct[i, j]):
                        ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=8,
                                color=_text_colour(cmap(norm(pct[i, j]))))
        ax.set_xticks(range(t), [str(j + 1) for j in range(t)])
        ax.set_yticks(range(t), [str(i + 1) for i in range(t)])
        ax.set_xlabel("evaluated on task")
        ax.set_ylabel("after training task")
        ax.set_title(name, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.tolist(), shrink=0.8, label="test accuracy (%)")
    return _save(fig, path, title, dpi=110)


def learning_curves(runs: list[tuple[str, dict]], path: str | os.PathLike, *, title: str = "") -> Path:
    """Test accuracy during training (``eval_every``), one panel per run: the overall accuracy and each
    task's, from the step its training starts, averaged over seeds; dotted lines mark the task boundaries.

    Args:
        runs: (title, curve) pairs; a curve holds ``step`` [K], ``task`` [K], ``accuracy`` [K] and
            ``task_accuracy`` [K, T] (0-1, NaN = not evaluated), as `figures.best_curves` averages them.
        path: the PNG to write.
        title: the figure's title.
    """
    fig, axes = _panels(len(runs), max_cols=3, size=(5.2, 3.6), sharey=True)
    cmap = colormaps["tab10"]
    for ax, (name, curve) in zip(axes, runs):
        step, task = np.asarray(curve["step"]), np.asarray(curve["task"])
        per_task = 100 * np.asarray(curve["task_accuracy"], float)
        for j in range(per_task.shape[1]):
            start = np.flatnonzero(task >= j)  # a task's line begins where its training does
            if len(start):
                k = max(0, start[0] - 1)
                ax.plot(step[k:], per_task[k:, j], color=cmap(j % 10), linewidth=1.0, label=f"task {j + 1}")
        ax.plot(step, 100 * np.asarray(curve["accuracy"], float), color="black", linewidth=1.8, label="all tasks")
        for t in range(int(task.max()) if len(task) else 0):
            ax.axvline(step[np.flatnonzero(task == t)[-1]], color="grey", linestyle=":", linewidth=1.0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylim(0, 100)  # forgotten and not yet trained tasks sit near 0
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize="x-small", loc="lower left")
    return _save(fig, path, title, dpi=110)


def pareto_scatter(points: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> Path:
    """Every grid point's final accuracy against its share of active hidden units, one colour per
    activation, with the Pareto front (the ``pareto`` column, e.g. `tables.sparsity_candidates`) joined.

    Args:
        points: rows with ``activation``, ``mean`` (%), ``active_mean`` (%) and ``pareto``.
        path: the PNG to write.
        title: the figure's title.
    """

    fig = Figure(figsize=(9.5, 5.2), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["tab10"]
    for i, act in enumerate(paper.paper_order(points["activation"], paper.ACTIVATION_ORDER)):
        mine = points[points["activation"] == act]
        ax.scatter(mine["active_mean"], mine["mean"], s=10, alpha=0.55, color=cmap(i % 10), label=paper.activation_name(act))
    front = points[points["pareto"]].sort_values("active_mean")
    ax.plot(front["active_mean"], front["mean"], color="black", linewidth=1.2, marker="o", markersize=4,
            drawstyle="steps-post", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("active hidden units after the last task (%, log scale)")
    ax.set_ylabel("final test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path, title, dpi=120)


def _panels(n: int, *, max_cols: int, size: tuple[float, float], sharey: bool = False) -> tuple[Figure, np.ndarray]:
    """A figure of ``n`` panels (at least one) in rows of up to ``max_cols``, each ``size`` inches, with
    room for a title; the flat array of axes, the unused ones at the end hidden."""
    cols = min(max(1, n), max_cols)
    rows = math.ceil(max(1, n) / cols)
    fig = Figure(figsize=(size[0] * cols, size[1] * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharey=sharey)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _save(fig: Figure, path: str | os.PathLike, title: str, *, dpi: int) -> Path:
    """Titles the figure (when a title is given) and writes it as PNG, creating the folder."""
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
