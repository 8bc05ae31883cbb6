"""What one Hydra job does around training: validation, resume, result file, summary, clean errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cl_sweep.config import ConfigError, validate
from cl_sweep.results import RESULT_FILENAME, is_complete, write_result


def _error(message: str, code: int = 2) -> None:
    """Prints one paragraph to stderr and exits; SystemExit passes through Hydra without a traceback."""
    print(f"cl_sweep: {message}", file=sys.stderr)
    raise SystemExit(code)


def summary(result: dict, path: Path | None) -> str:
    """The human summary printed at the end of a job."""
    lines = [
        f"{result['benchmark']}  activation={result['activation']}  optimizer={result['optimizer']}  "
        f"seeds={result['seeds']}" + ("  (early-stopped)" if result["early_stopped"] else ""),
    ]
    if result["status"] == "ok":
        lines.append(
            f"final accuracy: {100 * result['final_accuracy_mean']:.1f} ± {100 * result['final_accuracy_std']:.1f} %"
            f"  (per seed: {', '.join(f'{100 * a:.1f}' for a in result['final_accuracy'])})"
        )
    else:
        n = sum(result["diverged"])
        lines.append(f"DIVERGED: {n} of {len(result['seeds'])} seeds hit a non-finite loss (recorded as such)")
    ok = [m for m, d in zip(result["accuracy_matrix"], result["diverged"]) if not d]
    if ok:
        last = np.mean([m[-1] for m in ok], axis=0)
        lines.append("per-task accuracy after the last task: " + "  ".join(f"T{j + 1} {100 * a:.1f}" for j, a in enumerate(last)))
    lines.append(f"wall time: {result['wall_time_s']:.1f} s")
    if path is not None:
        lines.append(f"result: {path}")
    return "\n".join(lines)


def run_job(cfg: DictConfig, *, overrides: Sequence[str], output_dir: str) -> float:
    """Validates, skips a job already complete in ``output_dir``, trains, writes result.json, returns the metric."""
    from cl_sweep.data import DataUnavailableError
    from cl_sweep.train import objective, train_and_evaluate

    try:
        validate(cfg)
    except ConfigError as e:
        _error(str(e))
    out = Path(output_dir)
    if cfg.skip_completed:
        done = is_complete(out, list(overrides))
        if done is not None:
            print(f"already complete, not re-run: {out / RESULT_FILENAME}", file=sys.stderr)
            return objective(done)
    try:
        result = train_and_evaluate(cfg, overrides=overrides)
    except DataUnavailableError as e:
        _error(str(e), code=3)
    path = write_result(result, out)
    print(summary(result, path))
    return objective(result)
