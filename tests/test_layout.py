"""The package layout: no import cycles between cl_sweep's modules, and analysis stays free of JAX.

The graph is the modules' top-level imports (an import inside a function is deferred on purpose
and runs after every module has loaded, so it cannot close a cycle at import time).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import graphlib

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, known: set[str]) -> set[str]:
    """The cl_sweep modules ``path`` imports at module level (``from pkg import mod`` counts mod)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted((SRC / "cl_sweep").rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): top_level_imports(f, known) - {module_name(f)} for f in files}


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "cl_sweep.training.engine" in graph and "cl_sweep.analysis.tables" in graph  # the walk found the package
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"import cycle among cl_sweep's modules: {' -> '.join(e.args[1])}") from None


def test_each_part_imports_only_the_layers_below_it() -> None:
    # analysis reads result files: never the training code or the components' registries;
    # data knows nothing of models or training; components never import training's engine.
    forbidden = {
        "cl_sweep.analysis": ("cl_sweep.training", "cl_sweep.components", "cl_sweep.models", "cl_sweep.cli"),
        "cl_sweep.data": ("cl_sweep.training", "cl_sweep.components", "cl_sweep.models", "cl_sweep.analysis"),
        "cl_sweep.components": ("cl_sweep.training.engine", "cl_sweep.training.train", "cl_sweep.cli"),
    }
    bad = [
        f"{mod} imports {dep}"
        for mod, deps in import_graph().items()
        for part, banned in forbidden.items()
        if mod.startswith(part + ".")
        for dep in deps
        if dep.startswith(banned)
    ]
    assert bad == []


def test_analysis_loads_without_jax() -> None:
    # `make tables` on a laptop without a working JAX: the analysis package must not pull it in.
    code = (
        "import sys; import cl_sweep.analysis.tables, cl_sweep.analysis.figures, cl_sweep.analysis.metrics; "
        "bad = sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'cl_sweep.training'))); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_ruff_finds_no_errors() -> None:
    """`ruff check` with the project's rules ([tool.ruff] in pyproject.toml: undefined and unused names,
    syntax errors) passes on the whole checkout."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(SRC.parent)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
