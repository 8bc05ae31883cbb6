"""Exact, differentiable, vmap-friendly hot ops of the training step: k-th largest, weight norm."""

from __future__ import annotations

from functools import partial
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

from cl_sweep.training import kernels

__all__ = [
    "kth_largest",
    "weight_norm",
    "weight_norm_matmul",
    "weight_norm_matmul_reference",
    "weight_norm_matmul_split",
]

_SIGN_BIT = 0x80000000


# ---------------------------------------------------------------------------------------------
# k-th largest
# ---------------------------------------------------------------------------------------------


def _ordered_keys(x: jax.Array) -> jax.Array:
    """Maps float32 to uint32 keys whose unsigned order is IEEE-754 totalOrder of ``x``."""
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    # Negatives (sign bit set) get all bits flipped so that larger magnitude sorts lower;
    # non-negatives only get the sign bit set so that they sort above every negative.
    negative = (bits >> 31).astype(jnp.bool_)
    return bits ^ jnp.where(negative, jnp.uint32(0xFFFFFFFF), jnp.uint32(_SIGN_BIT))


def _keys_to_float(t: jax.Array) -> jax.Array:
    """Inverse of :func:`_ordered_keys`."""
    from_non_negative = (t >> 31).astype(jnp.bool_)
    bits = jnp.where(from_non_negative, t ^ jnp.uint32(_SIGN_BIT), ~t)
    return lax.bitcast_convert_type(bits, jnp.float32)


def _count(mask: jax.Array) -> jax.Array:
    return jnp.sum(mask, axis=-1, keepdims=True, dtype=jnp.int32)


def _radix_select(keys: jax.Array, k: jax.Array) -> jax.Array:
    """Largest key ``t`` with ``count(keys >= t) >= k``, i.e. the k-th largest key, shape [..., 1].

    Bitwise binary search from the most significant bit: 32 vectorised compare+count passes.
    ``count(keys >= t)`` only changes at key values, so the largest such ``t`` is itself a key.
    """
    # fori_loop, not unrolled: measured equally fast at H = 1000 and compiles ~4x faster.
    def step(i, t):
        candidate = t | (jnp.uint32(1) << (31 - i).astype(jnp.uint32))
        return jnp.where(_count(keys >= candidate) >= k, candidate, t)

    return lax.fori_loop(0, 32, step, jnp.zeros(keys.shape[:-1] + (1,), jnp.uint32))


def _topk_index_mask(keys: jax.Array, t: jax.Array, k: jax.Array) -> jax.Array:
    """One-hot mask [..., H] of the index ``lax.top_k`` reports for its k-th value.

    ``lax.top_k`` is stable: among bitwise-equal values the lower index ranks higher. With
    ``above = count(keys > t)``, the k-th element is the ``(k - above)``-th occurrence of ``t``
    in index order. Its position is found by a bitwise binary search over positions
    (ceil(log2 H) compare+count passes), which measured about 2x cheaper than a cumsum on CPU.
    """
    equal = keys == t
    rank = k - _count(keys > t)
    pos = lax.broadcasted_iota(jnp.int32, keys.shape, keys.ndim - 1)
    # Largest q with fewer than `rank` occurrences before position q: q is the wanted index.
    def step(i, q):
        candidate = q | (1 << (n_bits - 1 - i))
        return jnp.where(_count(equal & (pos < candidate)) < rank, candidate, q)

    n_bits = max(keys.shape[-1] - 1, 1).bit_length()
    q = lax.fori_loop(0, n_bits, step, jnp.zeros(t.shape, jnp.int32))
    return equal & (pos == q)


@jax.custom_jvp
def _kth_largest(x: jax.Array, k: jax.Array) -> jax.Array:
    return _keys_to_float(_radix_select(_ordered_keys(x), k))


@_kth_largest.defjvp
def _kth_largest_jvp(primals, tangents):
    x, k = primals
    x_dot, _ = tangents
    keys = _ordered_keys(x)
    t = _radix_select(keys, k)
    mask = _topk_index_mask(keys, t, k)
    # Linear in x_dot with a primal-only mask, so JAX can transpose it: the VJP is the same
    # one-hot scatter of the cotangent that lax.top_k's VJP does.
    tangent = jnp.sum(jnp.where(mask, x_dot, jnp.zeros_like(x_dot)), axis=-1, keepdims=True)
    return _keys_to_float(t), tangent


@jax.custom_jvp
def _kth_largest_cpu(x: jax.Array, k: jax.Array) -> jax.Array:
    return kernels.kth_largest(x, jnp.broadcast_to(k, x.shape[:-1]))[0]


@_kth_largest_cpu.defjvp
def _kth_largest_cpu_jvp(primals, tangents):
    x, k = primals
    x_dot, _ = tangents
    value, index = kernels.kth_largest(x, jnp.broadcast_to(k, x.shape[:-1]))
    pos = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    # the same one-hot (now from the kernel's index) and the same transposable form as above
    tangent = jnp.sum(jnp.where(pos == index, x_dot, jnp.zeros_like(x_dot)), axis=-1, keepdims=True)
    return value, tangent


KTH_METHODS = ("radix", "kernel")


def kth_largest(x: jax.Array, k: int | jax.Array, *, method: str | None = None) -> jax.Array:
    """The k-th largest value along the last axis; equals ``lax.top_k(x, k)[0][..., -1:]``.

    Works with a traced ``k`` (``lax.top_k`` needs a static one), under ``jax.vmap`` (over ``x``
    and/or ``k``) and inside ``lax.fori_loop``. Two exact implementations, equal bit for bit
    (tested): ``"radix"``, 32 vectorised compare+count passes over the last axis (a radix select
    on order-preserving integer keys, no sort), which runs anywhere; and ``"kernel"``, the same
    select one byte at a time over the surviving candidates in a C++ CPU kernel
    (cl_sweep.training.kernels), which also returns the index the gradient needs. ``method=None`` takes
    the kernel on the CPU where it is available, else the radix select.

    Ordering is IEEE-754 totalOrder, which is what ``lax.top_k`` uses:
    ``-NaN < -inf < ... < -0.0 < +0.0 < ... < +inf < +NaN`` (NaNs further ordered by payload
    bits). So ``+0.0`` ranks above ``-0.0``, a positive NaN is the largest value and a NaN is
    returned (with its gradient routed to it) whenever the k-th ranked element is one.

    Gradient: the cotangent goes, as in ``lax.top_k``'s VJP, to the single index that
    ``lax.top_k`` reports for its k-th value. Under ties (bitwise-equal values) ``lax.top_k``
    ranks the lower index first; this is matched exactly, so the gradient lands on the
    ``(k - #strictly larger)``-th occurrence of the value in index order. ``k`` gets no gradient.

    Args:
        x: float32 array [..., H].
        k: rank, 1 <= k <= H; Python int or int32 scalar (may be traced). Not range-checked (a
            traced k cannot be); k outside [1, H] returns a NaN.

    Returns:
        float32 array [..., 1].
    """
    x = jnp.asarray(x)
    if x.dtype != jnp.float32:
        raise TypeError(f"kth_largest expects float32, got {x.dtype}")
    if method is None:
        method = "kernel" if jax.default_backend() == "cpu" and kernels.available() else "radix"
    if method not in KTH_METHODS:
        raise ValueError(f"unknown kth_largest method {method!r}; allowed: {', '.join(KTH_METHODS)}")
    if method == "kernel" and not kernels.available():
        raise ValueError("kth_largest method 'kernel' needs the CPU kernels (cl_sweep.training.kernels), not available here")
    k = jnp.asarray(k, jnp.int32)
    return _kth_largest_cpu(x, k) if method == "kernel" else _kth_largest(x, k)


# ---------------------------------------------------------------------------------------------
# Centred weight normalisation
# ---------------------------------------------------------------------------------------------


def weight_norm(v: jax.Array, axis: int = 0) -> jax.Array:
    """Centred weight normalisation with gain 1: ``c / ||c||`` with ``c = v - mean(v, axis)``.

    Each unit's incoming weight vector (the slice along ``axis``) is made zero-mean and unit
    L2 norm. This is the straightforward reference; an all-constant slice gives NaN (0/0).

    Args:
        v: weights, e.g. [in, out] with ``axis=0``.
        axis: the fan-in axis reduced over.

    Returns:
        Array of ``v``'s shape.
    """
    c = v - jnp.mean(v, axis=axis, keepdims=True)
    return c / jnp.sqrt(jnp.sum(c * c, axis=axis, keepdims=True))


def weight_norm_matmul_reference(
    x: jax.Array, v: jax.Array, layout: Literal["in_out", "out_in"] = "in_out"
) -> jax.Array:
    """``x @ weight_norm(v)`` materialising the normalised matrix; autodiff gives its gradient."""
    if layout == "in_out":
        return x @ weight_norm(v, axis=0)
    return x @ weight_norm(v, axis=1).T


def _matmul(x: jax.Array, v: jax.Array, in_axis: int) -> jax.Array:
    """``x @ v`` for v [in, out] (in_axis=0) or ``x @ v.T`` for v [out, in] (in_axis=1)."""
    return lax.dot_general(x, v, (((1,), (in_axis,)), ((), ())))


def _matmul_t(d: jax.Array, v: jax.Array, in_axis: int) -> jax.Array:
    """``d @ v^T`` in the [in, out] sense: [B, out] x weights -> [B, in]."""
    return lax.dot_general(d, v, (((1,), (1 - in_axis,)), ((), ())))


def _outer(x: jax.Array, d: jax.Array, in_axis: int) -> jax.Array:
    """``x^T d`` laid out like the weights: [in, out] (in_axis=0) or [out, in] (in_axis=1)."""
    a, b = (x, d) if in_axis == 0 else (d, x)
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())))


def _units(u: jax.Array, in_axis: int) -> jax.Array:
    """Per-unit vector [out] broadcastable against the weights."""
    return jnp.expand_dims(u, in_axis)


def _wn_forward(x: jax.Array, v: jax.Array, in_axis: int, centre_weights: bool):
    mu = jnp.mean(v, axis=in_axis, keepdims=True)
    if centre_weights:
        c = v - mu
        n = jnp.sqrt(jnp.sum(c * c, axis=in_axis))
        out = _matmul(x, c, in_axis) / n
        return out, (x, c, n, out)
    # x_c @ v == x @ (v - mu) since x_c's rows sum to 0: centring the B x in activations
    # instead of the in x out weights saves writing and re-reading a weight-sized array.
    # Both column statistics from sums over v, with no centred copy of v: ||v - mu||^2 =
    # sum(v^2) - m mu^2. Kaiming-scale weights keep mu^2 tiny against sum(v^2)/m, so the
    # cancellation costs no precision that matters here. (XLA could fuse the two sibling sums into
    # one pass; jaxlib 0.10.2 on the CPU runs them as two YNNPACK reductions, two reads of v.)
    m = v.shape[in_axis]
    n = jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(v), axis=in_axis) - m * jnp.square(jnp.squeeze(mu, in_axis)), 0.0))
    x_c = x - jnp.mean(x, axis=-1, keepdims=True)
    out = _matmul(x_c, v, in_axis) / n
    return out, (x_c, v, n, out, mu)


def _wn_scaled_cotangent(in_axis: int, residuals, dout: jax.Array):
    """``d = dout / n`` and the per-unit ``beta = sum_b(d * out) / n`` of the backward pass."""
    n, out = residuals[2], residuals[3]
    d = dout / n
    return d, _units(jnp.sum(d * out, axis=0) / n, in_axis)


def _wn_backward(in_axis: int, centre_weights: bool, residuals, dout: jax.Array):
    xs, vs = residuals[:2]
    d, beta = _wn_scaled_cotangent(in_axis, residuals, dout)
    if centre_weights:
        x, c = xs, vs
        dx = _matmul_t(d, c, in_axis)
        g = _outer(x, d, in_axis)
        dv = g - jnp.mean(g, axis=in_axis, keepdims=True) - c * beta
        return dx, dv
    x_c, v = xs, vs
    # d @ (v - mu)^T = d @ v^T - (d . mu), and (d . mu) is the row mean of d @ v^T.
    dxv = _matmul_t(d, v, in_axis)
    dx = dxv - jnp.mean(dxv, axis=-1, keepdims=True)
    # x_c^T d is G - mean_in(G): centring x's rows centres the columns of x^T d.
    mu = residuals[4]  # saved by the forward: one pass over v fewer
    dv = _outer(x_c, d, in_axis) - (v - mu) * beta
    return dx, dv


def weight_norm_matmul_split(x: jax.Array, v: jax.Array):
    """:func:`weight_norm_matmul` (``in_out`` layout, ``out > B``) with its weight gradient left in parts.

    Returns ``(out, grad_parts)``: ``out`` as :func:`weight_norm_matmul` computes it, and
    ``grad_parts(dout) -> (G, s, beta)`` with ``dL/dv = G - (v - s / m) * beta``, ``s`` the column
    sums of ``v`` ([1, out]) and ``m`` its fan-in, the operations the custom VJP performs. The
    engine hands the parts to a fused optimizer kernel (cl_sweep.training.kernels) instead of
    materialising ``dL/dv``; the input gets no gradient. ``grad_parts(dout, dense=False) ->
    ((x_c, d), s, beta)`` leaves ``G = x_c^T d`` unmultiplied, for the kernel's sparse variant
    (``d = dout / n``: zero wherever the activation passed no gradient).
    """
    if x.ndim != 2 or v.ndim != 2 or v.shape[1] <= x.shape[0]:
        raise ValueError(f"weight_norm_matmul_split needs x [B, in] and v [in, out] with out > B, got {x.shape}, {v.shape}")
    out, residuals = _wn_forward(x, v, 0, False)

    def grad_parts(dout: jax.Array, dense: bool = True):
        d, beta = _wn_scaled_cotangent(0, residuals, dout)
        g = _outer(residuals[0], d, 0) if dense else (residuals[0], d)
        return g, jnp.sum(v, axis=0, keepdims=True), beta

    return out, grad_parts


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _wn_matmul(x: jax.Array, v: jax.Array, in_axis: int, centre_weights: bool) -> jax.Array:
    return _wn_forward(x, v, in_axis, centre_weights)[0]


_wn_matmul.defvjp(_wn_forward, _wn_backward)


def weight_norm_matmul(
    x: jax.Array, v: jax.Array, layout: Literal["in_out", "out_in"] = "in_out"
) -> jax.Array:
    """``x @ weight_norm(v)`` without materialising the normalised weights, hand-written VJP.

    Notation, per output unit j with fan-in m: ``mu_j = mean_i v_ij``, ``c = v - mu``,
    ``n_j = ||c_:j||``, ``w = c / n``, ``x_c = x - mean(x, -1)`` (x's rows centred over ``in``).

    Forward::

        out = (x @ c) / n = (x_c @ v) / n        # == (x @ v - sum(x)[:, None] * mu) / n

    Backward. With ``G = dL/dw = x^T dout`` and ``a_j = <G_:j, w_:j>``: per column
    ``dw/dc = (I - w w^T) / n`` and ``dc/dv = P = I - 1 1^T / m`` (both symmetric), so::

        dL/dv = P (G - w a) / n = (G - mean_i G - w a) / n        (mean_i w = 0)

    Identities that keep it to three GEMMs, as for a plain layer: ``a_j = sum_b dout_bj out_bj``
    (``<x^T dout, w> = <dout, x w>``) and ``G - mean_i G = x_c^T dout``. With ``d = dout / n``::

        dv = x^T d - mean_i(x^T d) - c * (sum_b d * out) / n
           = x_c^T d - c * (sum_b d * out) / n
        dx = d @ c^T = d @ v^T - mean_in(d @ v^T)                 (row-wise, over ``in``)

    Two static variants, picked by shape: when out > B (e.g. 784 -> 1000 at B = 64) the
    ``x_c``/``v`` forms are used, so no weight-sized array is ever written besides ``dv``;
    otherwise (e.g. 1000 -> 10) ``c`` is materialised, which is then the smaller array.

    Numerics: the ``x_c``/``v`` forms cancel the ``mu`` part of ``v`` in float32, a relative error
    of about eps * |mu_j| / rms(c_:j) (eps = 6e-8), i.e. negligible unless a unit's weights are
    almost constant around a large mean; the reference has the same issue in its centring.
    Gradients equal autodiff of :func:`weight_norm_matmul_reference` to float32 rounding.

    Args:
        x: inputs [B, in] (use ``jax.vmap`` for a population axis).
        v: raw weights, [in, out] for ``layout="in_out"`` (default) or [out, in] (rows are
            units) for ``layout="out_in"``; normalisation is always over ``in`` per unit. On CPU
            both measured within noise of each other (``benchmarks/ops_bench.py``).
        layout: storage layout of ``v``; the result and gradients do not depend on it.

    Returns:
        [B, out].
    """
    if layout not in ("in_out", "out_in"):
        raise ValueError(f"unknown layout {layout!r}")
    if x.ndim != 2 or v.ndim != 2:
        raise ValueError(f"expected x [B, in] and 2-D v, got {x.shape} and {v.shape}")
    in_axis = 0 if layout == "in_out" else 1
    return _wn_matmul(x, v, in_axis, v.shape[1 - in_axis] <= x.shape[0])
