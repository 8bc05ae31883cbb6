"""Hydra sweeper `grid`: per-option hyperparameter grids (a pair's grid = its activation grid × its optimizer grid)."""
