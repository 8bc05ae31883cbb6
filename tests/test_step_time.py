"""benchmarks/step_time.py's timed schedule: every step a full batch of real Split-MNIST examples,
however many steps are timed (it once ran past task 1's end into padding steps, whose all-zero
mask made the loss and then the weights NaN, and timed that)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from cl_sweep.data.datasets import load_dataset
from cl_sweep.data.tasks import class_incremental_split

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "step_time.py"


def _step_time():
    spec = importlib.util.spec_from_file_location("step_time_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_timed_step_is_a_full_batch_of_real_examples():
    ds = load_dataset("mnist", progress=False)
    split = class_incremental_split(ds.train_labels, ds.test_labels, 5, 2)
    full = sum(len(ix) for ix in split.train_indices) // 64  # 937
    idx, mask = _step_time().timed_schedule(split, full + 63)
    assert idx.shape == mask.shape == (full + 63, 64)
    assert mask.min() == 1.0  # no padding step, so no 0/0 loss
    assert np.array_equal(idx[full:], idx[:63])  # a longer run cycles through the same batches
    first = idx[:full].ravel()
    assert len(np.unique(first)) == first.size  # one pass: every example at most once
    assert set(np.unique(ds.train_labels[idx[198:256].ravel()])) == {2, 3}  # past task 1's 198 batches: task 2's digits
