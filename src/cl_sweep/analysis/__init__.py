"""Analysis: stored results into tables and figures, with no JAX and no training code.

`tables` (``make tables``) pools result files into the paper's mean ± std tables, `figures`
(``make figures``) draws them with `plots`; `paper` holds the paper's reported numbers and display
names; `metrics` computes average accuracy, forgetting and BWT from an accuracy matrix.
"""
