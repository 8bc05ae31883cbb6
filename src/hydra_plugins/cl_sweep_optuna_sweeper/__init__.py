"""cl_sweep's Optuna sweeper for Hydra: resumable studies on current Optuna (``hydra/sweeper=optuna``)."""
