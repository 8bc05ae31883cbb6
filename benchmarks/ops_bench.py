"""Times cl_sweep.training.ops against the straightforward JAX versions (forward+backward, jitted)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cl_sweep.training import kernels
from cl_sweep.training.ops import kth_largest, weight_norm_matmul, weight_norm_matmul_reference


def time_ms(fn: Callable, *args, repeats: int, inner: int) -> float:
    """Median over ``repeats`` of the mean ms per call over ``inner`` back-to-back calls."""
    jax.block_until_ready(fn(*args))  # compile + warm-up
    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            result = fn(*args)
        jax.block_until_ready(result)
        samples.append((time.perf_counter() - start) / inner * 1e3)
    return statistics.median(samples)


def interleaved_ms(cases: dict[str, tuple[Callable, tuple]], repeats: int, inner: int) -> dict:
    """Median ms per call of each (fn, args) case, timed in alternating rounds."""
    # Alternating rounds spread load from other processes on the shared CPU over all cases,
    # so the ratios stay meaningful even when the absolute numbers drift.
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (fn, args) in cases.items():
            times[name].append(time_ms(fn, *args, repeats=1, inner=inner))
    return {name: statistics.median(t) for name, t in times.items()}


def bench_kth(batch: int, hidden: int, ks: list[int], repeats: int, inner: int) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, hidden)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(batch, hidden)).astype(np.float32))

    def loss(kth: Callable) -> Callable:
        def f(x, *k):
            return jnp.sum(jnp.clip(x - kth(x, *k), 0.0, 2.0) * w)

        return jax.jit(jax.value_and_grad(f))

    methods = ["radix"] + (["kernel"] if jax.default_backend() == "cpu" and kernels.available() else [])
    for k in ks:
        cases = {"lax.top_k": (loss(lambda x, k=k: lax.top_k(x, k)[0][..., -1:]), (x,))}
        for m in methods:
            cases[m] = (loss(lambda x, k, m=m: kth_largest(x, k, method=m)), (x, jnp.int32(k)))
        t = interleaved_ms(cases, repeats, inner)
        print(
            f"kth value  B={batch} H={hidden} k={k:<4d} fwd+bwd  lax.top_k {t['lax.top_k']:7.3f} ms"
            + "".join(f"  kth_largest {m} {t[m]:7.3f} ms (x{t['lax.top_k'] / t[m]:.1f})" for m in methods)
        )


def bench_weight_norm(batch: int, shapes: list[tuple[int, int]], repeats: int, inner: int) -> None:
    rng = np.random.default_rng(1)
    for n_in, n_out in shapes:
        x = jnp.asarray(rng.random(size=(batch, n_in)).astype(np.float32))
        v_io = jnp.asarray(rng.normal(0.0, n_in**-0.5, size=(n_in, n_out)).astype(np.float32))
        c = jnp.asarray(rng.normal(size=(batch, n_out)).astype(np.float32))
        cases = {}
        for layout, v in (("in_out", v_io), ("out_in", v_io.T)):
            for name, mm in (
                ("reference", weight_norm_matmul_reference),
                ("fast", weight_norm_matmul),
            ):
                fn = jax.value_and_grad(
                    lambda x, v, mm=mm, layout=layout: jnp.sum(mm(x, v, layout) * c), (0, 1)
                )
                cases[f"{name} {layout}"] = (jax.jit(fn), (x, v))
        t = interleaved_ms(cases, repeats, inner)
        for layout in ("in_out", "out_in"):
            ref, fast = t[f"reference {layout}"], t[f"fast {layout}"]
            print(
                f"weight norm B={batch} {n_in}->{n_out} v[{layout}] fwd+bwd"
                f"  reference {ref:7.3f} ms"
                f"  weight_norm_matmul {fast:7.3f} ms  speed-up x{ref / fast:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (median taken)")
    parser.add_argument("--inner", type=int, default=20, help="calls per timed round")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; ms per call, median of rounds")
    bench_kth(64, 1000, [64, 256], args.repeats, args.inner)
    bench_weight_norm(64, [(784, 1000), (1000, 10)], args.repeats, args.inner)


if __name__ == "__main__":
    main()
