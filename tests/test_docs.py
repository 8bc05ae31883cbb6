"""The repository's own documents: links resolve, and docs/protocol.md (the protocol a clone carries)
states the same A.6 grids as conf/sweep/a6.yaml and the same Table 2 as cl_sweep.analysis.paper."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cl_sweep.analysis.paper import OPTIMIZER_ORDER, PAPER_TABLE2

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = (REPO / "docs" / "protocol.md").read_text()


def _table(after: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after the heading ``after``."""
    lines = PROTOCOL[PROTOCOL.index(after):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not set("".join(cells)) <= set("-: "):
            rows.append(cells)
    return rows[1:]  # without the header


def test_relative_links_of_the_readme_and_docs_resolve():
    for doc in (REPO / "README.md", REPO / "docs" / "protocol.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name}: {target}"


def test_nothing_points_outside_the_repository_for_the_protocol():
    for path in [REPO / "README.md", *REPO.glob("scripts/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("src/**/*.py")]:
        text = path.read_text()
        assert "PROTOCOL.md" not in text or path.name == "test_docs.py", path


def test_a6_grid_of_the_protocol_is_the_preset():
    grid = yaml.safe_load((REPO / "conf" / "sweep" / "a6.yaml").read_text())["hydra"]["sweeper"]["grid"]
    names = {"ASH": ["ash"], "Hard ASH": ["hard_ash"], "ASH, Hard ASH": ["ash", "hard_ash"], "Top-K (both)": ["topk_subtract", "topk_mask"],
             "LWTA": ["lwta"], "RMSprop": ["rmsprop"], "Adam": ["adam"], "Adagrad": ["adagrad"], "SGD": ["sgd"], "SGDM": ["sgdm"]}
    keys = {"α": "alpha", "z_k": "z_k", "β": "beta", "k": "k", "groups": "groups", "decay": "decay", "lr": "learning_rate",
            "b1": "b1", "b2": "b2", "momentum": "momentum", "initial accumulator": "initial_accumulator_value"}
    rows = _table("## The A.6 grids")
    stated = {}
    for group, key, values, _default in rows:
        for option in names[group]:
            stated.setdefault(option, {})[keys[key]] = [float(v) for v in values.split(",")]
    preset = {option: {k: [float(v) for v in vs] for k, vs in points.items()}
              for part in ("activation", "optimizer") for option, points in grid[part].items() if points}
    assert stated == preset


def test_table2_of_the_protocol_is_cl_sweeps_copy_of_the_paper():
    rows = _table("Table 2 of the paper")
    display = {"ASH": "ash", "Hard ASH": "hard_ash", "Top-K subtract": "topk_subtract", "Top-K mask": "topk_mask", "LWTA": "lwta",
               "ReLU": "relu", "Swish": "swish", "Sigmoid": "sigmoid", "Hard Sigmoid": "hard_sigmoid"}
    stated = {display[name]: [tuple(float(x) for x in cell.split("±")) for cell in cells] for name, *cells in rows}
    assert stated == {act: [tuple(PAPER_TABLE2[act][opt]) for opt in OPTIMIZER_ORDER] for act in PAPER_TABLE2}
