"""Property tests for cl_sweep.training.ops: kth_largest against lax.top_k, weight norm against autodiff."""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cl_sweep.training import kernels
from cl_sweep.training.ops import (
    kth_largest,
    weight_norm,
    weight_norm_matmul,
    weight_norm_matmul_reference,
)


def _bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def _topk_kth(x: jax.Array, k: int) -> jax.Array:
    return lax.top_k(x, k)[0][..., -1:]


def _sample(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Random float32 data; "ties" draws from few values incl. both zeros and negatives."""
    if kind == "normal":
        return rng.normal(size=shape).astype(np.float32)
    if kind == "ties":
        pool = np.array([-3.0, -1.5, -0.0, 0.0, 0.25, 0.25, 2.0, 7.0], np.float32)
        return rng.choice(pool, size=shape)
    if kind == "negative":
        return -np.abs(rng.normal(size=shape)).astype(np.float32) * 10.0 ** rng.integers(-30, 30)
    if kind == "specials":
        pool = np.array(
            [np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1.0],
            np.float32,
        )
        return rng.choice(pool, size=shape)
    raise ValueError(kind)


def _ks(h: int, rng: np.random.Generator) -> list[int]:
    return sorted({1, h, max(1, h // 2), *rng.integers(1, h + 1, size=3).tolist()})


# Both exact implementations; the C++ kernel wherever it can run (tests/test_kernels.py asserts
# that it does on every machine with x86-64, AVX, FMA and g++).
METHODS = ["radix"] + (["kernel"] if kernels.available() else [])
by_method = pytest.mark.parametrize("method", METHODS)
_kth_jit = jax.jit(kth_largest, static_argnames="method")  # k traced: one compile per shape, not per k


@pytest.mark.parametrize("kind", ["normal", "ties", "negative", "specials"])
@pytest.mark.parametrize("shape", [(1,), (7,), (5, 33), (64, 1000), (2, 3, 129)])
@by_method
def test_kth_largest_equals_top_k(shape, kind, method):
    rng = np.random.default_rng(zlib.crc32(repr((shape, kind)).encode()))
    x = jnp.asarray(_sample(rng, shape, kind))
    ks = _ks(shape[-1], rng)
    # Eager with a Python int once; the rest jitted with k traced (one compile per shape).
    np.testing.assert_array_equal(_bits(kth_largest(x, ks[-1], method=method)), _bits(_topk_kth(x, ks[-1])))
    for k in ks:
        got = _kth_jit(x, jnp.int32(k), method=method)
        assert got.shape == shape[:-1] + (1,)
        # Bitwise: distinguishes -0.0 from +0.0 and compares NaN payloads.
        np.testing.assert_array_equal(_bits(got), _bits(_topk_kth(x, k)), err_msg=f"k={k}")


@by_method
def test_kth_largest_zero_signs_and_nan_order(method):
    x = jnp.array([-0.0, 0.0, jnp.nan, -jnp.nan, jnp.inf, -0.0, 0.0], jnp.float32)
    for k in range(1, x.shape[0] + 1):
        np.testing.assert_array_equal(_bits(kth_largest(x, k, method=method)), _bits(_topk_kth(x, k)))


@by_method
def test_kth_largest_vmap_over_x_and_k_inside_fori_loop(method):
    rng = np.random.default_rng(0)
    x = jnp.asarray(_sample(rng, (4, 16, 50), "ties"))  # population 4 x batch 16 x H 50
    ks = jnp.array([1, 7, 25, 50], jnp.int32)

    @jax.jit
    def run(x, ks):
        def body(i, acc):
            return acc + jax.vmap(lambda x, k: kth_largest(x, k, method=method))(x + i.astype(jnp.float32), ks)

        return lax.fori_loop(0, 3, body, jnp.zeros(x.shape[:-1] + (1,), jnp.float32))

    got = run(x, ks)
    expected = sum(
        jnp.stack([_topk_kth(x[p] + i, int(ks[p])) for p in range(4)]) for i in range(3)
    )
    np.testing.assert_array_equal(_bits(got), _bits(expected))


def _downstream(kth, x, w):
    return jnp.sum(jnp.clip(x - kth(x), 0.0, 2.0) * w)


@pytest.mark.parametrize("kind", ["normal", "ties", "specials"])
@pytest.mark.parametrize("shape", [(9,), (6, 40), (64, 1000)])
@by_method
def test_kth_largest_gradient_equals_top_k(shape, kind, method):
    rng = np.random.default_rng(zlib.crc32(repr((shape, kind, "g")).encode()))
    x = jnp.asarray(_sample(rng, shape, kind))
    if kind == "specials":
        x = jnp.where(jnp.isnan(x), 0.5, x)  # NaN downstream would poison both gradients
    w = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    grad_mine = jax.jit(jax.grad(lambda x, k: _downstream(lambda x: kth_largest(x, k, method=method), x, w)))
    for k in _ks(shape[-1], rng):
        expected = jax.grad(lambda x: _downstream(lambda x: _topk_kth(x, k), x, w))(x)
        np.testing.assert_array_equal(grad_mine(x, jnp.int32(k)), expected, err_msg=f"k={k}")


@by_method
def test_kth_largest_gradient_picks_top_k_index_under_ties(method):
    x = jnp.array([1.0, 3.0, 3.0, 0.0, 3.0, 3.0], jnp.float32)
    grad = jax.jit(jax.grad(lambda x, k: kth_largest(x, k, method=method)[0]))
    for k in range(1, 7):
        got = grad(x, jnp.int32(k))
        expected = jax.grad(lambda x: _topk_kth(x, k)[0])(x)
        np.testing.assert_array_equal(got, expected)
        assert float(jnp.sum(got)) == 1.0


@by_method
def test_kth_largest_gradient_under_vmap_with_traced_k(method):
    rng = np.random.default_rng(1)
    x = jnp.asarray(_sample(rng, (3, 8, 30), "ties"))
    w = jnp.asarray(rng.normal(size=(8, 30)).astype(np.float32))
    ks = jnp.array([1, 13, 30], jnp.int32)
    got = jax.jit(
        jax.vmap(jax.grad(lambda x, k: _downstream(lambda x: kth_largest(x, k, method=method), x, w)))
    )(x, ks)
    for p in range(3):
        k = int(ks[p])
        expected = jax.grad(lambda x: _downstream(lambda x: _topk_kth(x, k), x, w))(x[p])
        np.testing.assert_array_equal(got[p], expected)


@pytest.mark.parametrize("shape,axis", [((784, 100), 0), ((100, 784), 1), ((3, 5), 0)])
def test_weight_norm_unit_norm_zero_mean(shape, axis):
    v = jnp.asarray(np.random.default_rng(2).normal(1.0, 0.3, size=shape).astype(np.float32))
    w = weight_norm(v, axis)
    np.testing.assert_allclose(jnp.sum(w * w, axis=axis), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.mean(w, axis=axis), 0.0, atol=1e-6)


def _wn_loss(matmul, layout, c):
    return lambda x, v: jnp.sum(jnp.tanh(matmul(x, v, layout)) * c)


def _assert_close(got, expected):
    # rtol on the array scale: elementwise rtol is meaningless for entries that cancel to ~0.
    scale = float(jnp.max(jnp.abs(expected)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6 * scale)


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize(
    "b,n_in,n_out", [(64, 784, 1000), (64, 1000, 10), (5, 7, 3), (2, 7, 9), (1, 3, 1)]
)
def test_weight_norm_matmul_matches_reference(layout, b, n_in, n_out):
    rng = np.random.default_rng(n_in * n_out + b)
    x = jnp.asarray(rng.normal(size=(b, n_in)).astype(np.float32))
    v = rng.normal(0.02, 0.05, size=(n_in, n_out)).astype(np.float32)
    v = jnp.asarray(v if layout == "in_out" else v.T)
    c = jnp.asarray(rng.normal(size=(b, n_out)).astype(np.float32))
    ref = jax.jit(jax.value_and_grad(_wn_loss(weight_norm_matmul_reference, layout, c), (0, 1)))
    fast = jax.jit(jax.value_and_grad(_wn_loss(weight_norm_matmul, layout, c), (0, 1)))
    fwd = jax.jit(weight_norm_matmul, static_argnums=2)
    fwd_ref = jax.jit(weight_norm_matmul_reference, static_argnums=2)
    _assert_close(fwd(x, v, layout), fwd_ref(x, v, layout))
    (l_ref, g_ref), (l_fast, g_fast) = ref(x, v), fast(x, v)
    _assert_close(l_fast, l_ref)
    _assert_close(g_fast[0], g_ref[0])
    _assert_close(g_fast[1], g_ref[1])


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_weight_norm_matmul_vmap_population(layout):
    rng = np.random.default_rng(3)
    p, b, n_in, n_out = 3, 16, 40, 25
    x = jnp.asarray(rng.normal(size=(p, b, n_in)).astype(np.float32))
    shape = (p, n_in, n_out) if layout == "in_out" else (p, n_out, n_in)
    v = jnp.asarray(rng.normal(0.1, 0.2, size=shape).astype(np.float32))
    c = jnp.asarray(rng.normal(size=(b, n_out)).astype(np.float32))
    grads = lambda mm: jax.jit(jax.vmap(jax.grad(_wn_loss(mm, layout, c), (0, 1))))(x, v)
    for got, expected in zip(grads(weight_norm_matmul), grads(weight_norm_matmul_reference)):
        _assert_close(got, expected)


def test_weight_norm_matmul_rejects_bad_layout():
    with pytest.raises(ValueError):
        weight_norm_matmul(jnp.ones((2, 3)), jnp.ones((3, 4)), "columns")


def test_kth_largest_methods_agree_out_of_range_and_refuse_unknown():
    x = jnp.asarray(np.random.default_rng(5).normal(size=(3, 17)).astype(np.float32))
    for k in (0, -2, 18, 100):  # out of 1..H: a NaN (not range-checked: k may be traced), no gradient
        values = [kth_largest(x, k, method=m) for m in METHODS]
        assert np.isnan(np.asarray(values[0])).all()
        for v in values[1:]:
            np.testing.assert_array_equal(_bits(v), _bits(values[0]))
        for m in METHODS:
            grad = jax.grad(lambda x: jnp.sum(jnp.nan_to_num(kth_largest(x, k, method=m))))(x)
            assert not np.asarray(grad).any()
    with pytest.raises(ValueError, match="unknown kth_largest method 'sort'; allowed: radix, kernel"):
        kth_largest(x, 3, method="sort")
