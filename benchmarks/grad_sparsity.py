"""#16's sparsity question, measured: how sparse is the gradient at the first layer's pre-activations?

    .venv/bin/python benchmarks/grad_sparsity.py [--activations hard_ash,topk_subtract,...] [--limit-per-task N]

The first layer's weight gradient is ``x_c^T d`` (cl_sweep.training.ops.weight_norm_matmul), one
[784, 64] x [64, 1000] GEMM per step whose right factor ``d`` is the loss's gradient with respect to
the pre-activations. Where most of ``d`` is exactly zero that GEMM could be computed from the active
entries only, and a hidden unit whose column of ``d`` is zero for the whole batch gets an exactly-zero
weight gradient (an exactly-zero Adagrad or SGD update; RMSprop and Adam still decay their state there).

For each activation (its default hyperparameters) one seed of the paper's MLP trains Split-MNIST on
real MNIST, one epoch per task, batch 64, Adagrad at its default learning rate with the update clip
0.01 (this script's own loop, the default job's shapes and optimizer). After each task, on 16 batches of
64 of that task's training images, it prints:

- ``nnz/example``: the mean number of non-zero entries of ``d`` per example (of 1000 units);
- ``union/batch``: the mean number of units whose column of ``d`` is non-zero for some example of the batch;
- ``dense rows``: the share of examples whose row of ``d`` is non-zero everywhere it could be;
- for Hard ASH, ``coupled``: the share of examples whose row carries the statistics term (the gradient
  through the example's mean and std, which adds ``a_i + b_i (x_ij - mu_i)`` to every unit j);
- ``direct nnz``: the non-zero entries per example without that statistics term (Hard ASH's sparse part);
- the GEMM's multiply-adds if only the non-zero entries were used, against the dense GEMM's.

Where the entries are sparse (Top-K, LWTA), it then times, on the last probe batch's real ``d``, the dense
GEMM against the same product written from the active entries in XLA (each example's active units as
rank-1 rows, summed per unit by ``jax.ops.segment_sum``), best of 5 rounds of 200 calls, and checks that
the two agree (float32 summation order differs, so within 1e-5 relative). Where a C compiler is found it
also times ``sparse_xtd.c`` (beside this file, compiled with ``-O3 -march=native``, called through
ctypes on one core) in both layouts of the weight: ``[784, 1000]`` as the engine stores it (each active
entry adds to a column: a tile of 16 inputs, written transposed) and ``[1000, 784]`` (each active
entry adds one contiguous row), each against XLA's dense GEMM producing that layout.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cl_sweep.components.activations import get_activation
from cl_sweep.data.datasets import load_dataset
from cl_sweep.data.tasks import class_incremental_split
from cl_sweep.models import mlp

BATCH, TASKS, HIDDEN, PROBES = 64, 5, 1000, 16


def measure(name: str, limit: int | None, seed: int = 0) -> list[dict]:
    act = get_activation(name).fn
    ds = load_dataset("mnist", progress=False)
    images = mlp.preprocess(jnp.asarray(ds.train_images))
    labels = jnp.asarray(ds.train_labels.astype(np.int32))
    split = class_incremental_split(ds.train_labels, ds.test_labels, TASKS, 2)
    opt = optax.chain(optax.adagrad(2e-4, initial_accumulator_value=1e-6), optax.clip(0.01))
    params = mlp.init_params(jax.random.PRNGKey(seed), HIDDEN)
    state = opt.init(params)
    wn = (True, False)

    def loss_from_pre(pre, params, y):
        logits = mlp._head(pre, params, act, wn)[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def loss(params, x, y):
        return loss_from_pre(mlp.hidden(params, x, wn), params, y)

    @jax.jit
    def step(params, state, x, y):
        g = jax.grad(loss)(params, x, y)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state

    @jax.jit
    def pre_grad(params, x, y):  # d: dL/d(pre-activations), and the same with the statistics stopped
        pre = mlp.hidden(params, x, wn)
        d = jax.grad(loss_from_pre)(pre, params, y)
        d_direct = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
            mlp._head(p, params, act_stopped, wn)[0], y).mean())(pre)
        return d, d_direct

    def act_stopped(p):  # the activation with its per-example statistics held constant
        if name in ("hard_ash", "ash"):
            from cl_sweep.components import activations as A
            t = jax.lax.stop_gradient(A._threshold(p, 2.3))
            if name == "hard_ash":
                return jnp.clip(p, 0.0, 2.0) * jax.nn.hard_sigmoid(3.0 * (p - t))
            return p * jax.nn.sigmoid(3.0 * (p - t))
        return act(p)

    rng = np.random.default_rng(seed)
    rows = []
    for t in range(TASKS):
        order = rng.permutation(split.train_indices[t])[:limit]
        for b in range(0, len(order), BATCH):
            i = order[b:b + BATCH]
            params, state = step(params, state, images[i], labels[i])
        probe = rng.permutation(split.train_indices[t])[: PROBES * BATCH].reshape(PROBES, -1)
        nnz, union, dense, coupled, direct = [], [], [], [], []
        for i in probe:
            d, d_direct = (np.asarray(a) for a in pre_grad(params, images[i], labels[i]))
            nz = d != 0
            direct.append((d_direct != 0).sum(1).mean())
            nnz.append(nz.sum(1).mean())
            union.append(nz.any(0).sum())
            dense.append((nz.sum(1) == HIDDEN).mean())
            coupled.append((np.abs(d - d_direct).max(1) > 0).mean())
        rows.append({"task": t + 1, "nnz": float(np.mean(nnz)), "union": float(np.mean(union)),
                     "dense": float(np.mean(dense)), "coupled": float(np.mean(coupled)),
                     "direct": float(np.mean(direct))})
    x = np.asarray(images[probe[-1]])
    return rows, x - x.mean(1, keepdims=True), d


def time_gemm(x_c: np.ndarray, d: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """ms per call of the dense ``x_c^T d`` and of its active-entries forms, and each form's largest
    difference from the dense product (relative to its largest entry)."""
    k = int((d != 0).sum(1).max())
    idx = np.argsort(d == 0, axis=1, kind="stable")[:, :k].astype(np.int32)  # each row's active units first
    vals = np.take_along_axis(d, idx, 1)
    x_c, d, idx, vals = (jnp.asarray(a) for a in (x_c, d, idx, vals))
    dense = jax.jit(lambda x, d: x.T @ d)

    @jax.jit
    def sparse(x, idx, vals):  # sum over examples of rank-1 rows, one per active (example, unit)
        rows = (vals[:, :, None] * x[:, None, :]).reshape(-1, x.shape[1])
        return jax.ops.segment_sum(rows, idx.reshape(-1), num_segments=d.shape[1]).T

    ref, out = np.asarray(dense(x_c, d)), np.asarray(sparse(x_c, idx, vals))
    timings = {"dense": (lambda: dense(x_c, d).block_until_ready()),
               "XLA segment_sum": (lambda: sparse(x_c, idx, vals).block_until_ready())}
    diffs = {"XLA segment_sum": float(np.abs(out - ref).max() / np.abs(ref).max())}
    lib = _c_library()
    if lib is not None:
        P = ctypes.POINTER(ctypes.c_float)
        xs, ds = np.ascontiguousarray(x_c, np.float32), np.ascontiguousarray(d, np.float32)
        B, I, H = xs.shape[0], xs.shape[1], ds.shape[1]
        out_ih, out_hi = np.zeros((I, H), np.float32), np.zeros((H, I), np.float32)
        args = (xs.ctypes.data_as(P), ds.ctypes.data_as(P))
        c_ih = lambda: lib.sparse_xtd(*args, out_ih.ctypes.data_as(P), B, I, H)
        c_hi = lambda: lib.sparse_xtd_t(*args, out_hi.ctypes.data_as(P), B, I, H)
        dense_t = jax.jit(lambda x, d: d.T @ x)
        c_ih(), c_hi()
        diffs["C [784, 1000]"] = float(np.abs(out_ih - ref).max() / np.abs(ref).max())
        diffs["C [1000, 784]"] = float(np.abs(out_hi.T - ref).max() / np.abs(ref).max())
        timings.update({"C [784, 1000]": c_ih, "dense [1000, 784]": (lambda: dense_t(x_c, d).block_until_ready()),
                        "C [1000, 784]": c_hi})
    ms = {}
    for name, f in timings.items():
        f()
        best = float("inf")
        for _ in range(5):
            tic = time.perf_counter()
            for _ in range(200):
                f()
            best = min(best, (time.perf_counter() - tic) / 200 * 1e3)
        ms[name] = best
    return ms, diffs


def _c_library():
    """sparse_xtd.c compiled for this machine (ctypes), or None where no C compiler is found."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("no C compiler found: the C loops over the active entries are not timed")
        return None
    out = Path(tempfile.mkdtemp(prefix="grad_sparsity_")) / "libsparse_xtd.so"
    proc = subprocess.run([cc, "-O3", "-march=native", "-shared", "-fPIC", "-o", str(out),
                           str(Path(__file__).with_name("sparse_xtd.c"))], capture_output=True, text=True)
    if proc.returncode:
        print(f"{cc} could not build sparse_xtd.c: the C loops are not timed ({proc.stderr.strip()[:300]})")
        return None
    return ctypes.CDLL(str(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--activations", default="hard_ash,ash,topk_subtract,topk_mask,lwta,relu")
    ap.add_argument("--limit-per-task", type=int, default=None, help="training examples per task (default: all)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from optuna_batch import cpu_name

    print(f"CPU: {cpu_name()}; {os.cpu_count()} CPUs; batch {BATCH}, {PROBES} probe batches per task, "
          f"the first layer's weight-gradient GEMM [784 x {BATCH}] x [{BATCH} x {HIDDEN}]"
          + (f"; {args.limit_per_task} examples per task" if args.limit_per_task else ""))
    dense_macs = 784 * BATCH * HIDDEN
    print(f"{'activation':<14} {'task':>4} {'nnz/example':>11} {'union/batch':>11} {'dense rows':>10} "
          f"{'coupled':>8} {'direct nnz':>10} {'sparse MACs / dense':>19}")
    timings = []
    for name in args.activations.split(","):
        rows, x_c, d = measure(name, args.limit_per_task)
        for r in rows:
            sparse_macs = 784 * BATCH * r["nnz"]  # a coupled row is dense: its statistics term touches every unit
            print(f"{name:<14} {r['task']:>4} {r['nnz']:>11.1f} {r['union']:>11.1f} {r['dense']:>10.2f} "
                  f"{r['coupled']:>8.2f} {r['direct']:>10.1f} {sparse_macs / dense_macs:>19.3f}")
        if rows[-1]["nnz"] < HIDDEN / 4:
            timings.append((name, *time_gemm(x_c, d)))
    for name, ms, diffs in timings:
        print(f"{name}: the weight gradient, ms per call (best of 5 rounds of 200): "
              + ", ".join(f"{k} {v:.3f}" for k, v in ms.items()))
        print(f"  from the active entries against dense: XLA segment_sum {ms['XLA segment_sum'] / ms['dense']:.2f} x"
              + (f", C [784, 1000] {ms['C [784, 1000]'] / ms['dense']:.2f} x, C [1000, 784] "
                 f"{ms['C [1000, 784]'] / ms['dense [1000, 784]']:.2f} x (of the dense GEMM in the same layout)"
                 if "C [1000, 784]" in ms else "")
              + "; largest relative differences " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
        for k, v in diffs.items():
            assert v < 1e-5, f"{name}: {k} differs from the dense product by {v:.1e}"

if __name__ == "__main__":
    main()
