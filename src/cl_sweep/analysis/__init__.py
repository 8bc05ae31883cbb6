"""Analysis: stored results into tables and figures, with no JAX and no training code.

`tables` (``make tables``) pools result files into the paper's mean ± std tables, `figures`
(``make figures``) draws them with `plots`; `paper` holds the paper's reported numbers and display
names; `metrics` computes average accuracy, forgetting and BWT from an accuracy matrix.

The API for notebooks and scripts (`api`): ``load(*folders) -> (jobs, problems)``, ``per_seed(jobs)``,
``summarize(jobs, pool=...)``, ``paper_setting(points)`` and ``best(points, per=..., select=...)``, importable from here; they load lazily, so ``cl_sweep.analysis.metrics``
(which training imports) does not pull in pandas.
"""


def __getattr__(name: str):
    if name in ("load", "per_seed", "summarize", "paper_setting", "best", "CELL"):
        from cl_sweep.analysis import api

        return getattr(api, name)
    raise AttributeError(f"module 'cl_sweep.analysis' has no attribute {name!r}")
