"""The fused CPU kernels (cl_sweep.training.kernels) compute bit for bit what the plain XLA program computes."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cl_sweep.training import engine, kernels, ops
from cl_sweep.data.datasets import load_dataset
from cl_sweep.training.engine import Member, Structure
from cl_sweep.data.tasks import class_incremental_split


def _supported_here() -> bool:
    flags = set(kernels._cpu_flags().split())
    return platform.machine() == "x86_64" and {"avx", "fma"} <= flags and shutil.which("g++") is not None


def _bits(a) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


# The kernels are required wherever they can run: CI's machines are x86-64 with AVX, FMA and g++.
needs_kernel = pytest.mark.skipif(not _supported_here(), reason="the fused kernels need x86-64 with AVX, FMA and g++")


def test_availability_matches_the_machine():
    assert kernels.available() == _supported_here()


def _case(rng, P, I, O):
    g = rng.normal(size=(P, I, O)).astype(np.float32) * 1e-3
    v = rng.normal(size=(P, I, O)).astype(np.float32) * 0.05
    acc = np.abs(rng.normal(size=(P, I, O))).astype(np.float32) * 1e-5
    acc[0, :3] = 0.0  # Adagrad's where(acc > 0, ...) branch
    acc[-1, -1, :5] = 1e-40  # subnormal: XLA's rsqrt keeps the hardware estimate there
    g[0, 1, :4] = [np.inf, -np.inf, np.nan, 1e30]  # non-finite updates go through the clip as XLA does
    beta = rng.normal(size=(P, 1, O)).astype(np.float32) * 1e-2
    lr = rng.choice([1e-4, 2e-3, 0.5], size=P).astype(np.float32)
    hp = rng.choice([0.5, 0.9, 0.999], size=P).astype(np.float32)
    return g, v, acc, beta, lr, hp


@needs_kernel
@pytest.mark.parametrize("kind", sorted(set(kernels.KINDS) - {"adam"}))  # Adam's two moments: the next test
@pytest.mark.parametrize("clip", [0.01, 1e-6, None])
@pytest.mark.parametrize("shape", [(1, 3, 8), (3, 17, 40), (2, 784, 1000)])
def test_fused_update_computes_the_optax_chain(kind, clip, shape):
    """The kernel against optax compiled on its own. Bit for bit is only promised against the
    engine's own program (next tests): how XLA rounds the centring depends on how it fuses."""
    assert kernels.available()
    args = _case(np.random.default_rng(zlib.crc32(repr((kind, clip, shape)).encode())), *shape)
    ref = jax.jit(jax.vmap(lambda *a: kernels.reference_update(kind, *a, clip)))(*args)
    got = jax.jit(jax.vmap(lambda *a: kernels.fused_update(kind, *a, clip)))(*args)
    for name, r, f in zip(("weights", "accumulator"), ref, got):
        r, f = np.asarray(r), np.asarray(f)
        assert r.shape == f.shape == shape
        np.testing.assert_array_equal(np.isnan(f), np.isnan(r), err_msg=name)
        np.testing.assert_allclose(f, r, rtol=2e-6, atol=3e-7, err_msg=name)  # atol: v + u cancelling, |u| up to 0.5
    assert np.isnan(np.asarray(got[0])[0, 1, 2])  # a NaN gradient gives a NaN weight, as in optax
    if clip is not None:  # the clip bounds every finite step
        step = np.abs(np.asarray(got[0]) - args[1])
        finite = np.isfinite(step)  # allowing for the roundings of v + u and of this difference
        assert np.all(step[finite] <= clip + 2 * np.spacing(np.abs(args[1]))[finite])


@needs_kernel
@pytest.mark.parametrize("bias_correction", [True, False])
@pytest.mark.parametrize("clip", [0.01, None])
@pytest.mark.parametrize("shape", [(1, 3, 8), (3, 17, 40), (2, 784, 1000)])
def test_fused_adam_computes_the_optax_chain(bias_correction, clip, shape):
    """Adam's two moments and bias corrections (at step 7 of each member) in the kernel against the
    registered optimizer's optax chain compiled on its own, with and without bias correction (paper A.8)."""
    from cl_sweep.components.optimizers import get_optimizer, with_update_clip

    assert kernels.available()
    rng = np.random.default_rng(zlib.crc32(repr(("adam", bias_correction, clip, shape)).encode()))
    g, v, _, beta, lr, _ = _case(rng, *shape)
    mu = (rng.normal(size=shape) * 1e-4).astype(np.float32)
    nu = (np.abs(rng.normal(size=shape)) * 1e-7).astype(np.float32)
    b1 = rng.choice([0.9, 0.98], size=shape[0]).astype(np.float32)
    b2 = rng.choice([0.999, 0.9995], size=shape[0]).astype(np.float32)

    def chain(lr, b1, b2, v, mu, nu):
        tx = with_update_clip(get_optimizer("adam").factory(learning_rate=lr, b1=b1, b2=b2, bias_correction=bias_correction), clip)
        state = kernels.replace_param_state(tx.init({"w": v}), "w", (mu, nu))
        state = jax.tree_util.tree_map_with_path(  # six steps taken before this one
            lambda path, leaf: jnp.int32(6) if any(getattr(k, "name", None) == "count" for k in path) else leaf, state)
        return tx, state

    def reference(g, v, mu, nu, beta, lr, b1, b2):
        tx, state = chain(lr, b1, b2, v, mu, nu)
        dv = g - (v - jnp.mean(v, axis=0, keepdims=True)) * beta
        u, new = tx.update({"w": dv}, state, {"w": v})
        return optax.apply_updates({"w": v}, u)["w"], kernels.param_state(new, "w")

    def fused(g, v, mu, nu, beta, lr, b1, b2):
        tx, state = chain(lr, b1, b2, v, mu, nu)
        _, new = tx.update({"w": jnp.zeros_like(v)}, state, {"w": v})  # the engine's way to the advanced count
        return kernels.fused_update("adam", g, v, (mu, nu), beta, lr, kernels.adam_hp(new, b1, b2, bias_correction), clip)

    args = (g, v, mu, nu, beta, lr, b1, b2)
    ref = jax.jit(jax.vmap(reference))(*args)
    got = jax.jit(jax.vmap(fused))(*args)
    for name, r, f in zip(("weights", "mu", "nu"), (ref[0], *ref[1]), (got[0], *got[1])):
        r, f = np.asarray(r), np.asarray(f)
        assert r.shape == f.shape == shape
        np.testing.assert_array_equal(np.isnan(f), np.isnan(r), err_msg=name)
        np.testing.assert_allclose(f, r, rtol=2e-6, atol=3e-7, err_msg=name)
    moved = np.asarray(got[0]) - v
    assert np.isfinite(moved).mean() > 0.8 and np.abs(moved[np.isfinite(moved)]).max() > 0  # the weights did move


@needs_kernel
def test_fused_update_rejects_widths_its_loop_does_not_mirror():
    args = _case(np.random.default_rng(0), 1, 3, 12)
    with pytest.raises(Exception, match="multiple of 8"):
        jax.block_until_ready(jax.vmap(lambda *a: kernels.fused_update("adagrad", *a, 0.01))(*args))


def _sparse_case(rng, P, I, O, nonzero_per_example):
    """x_c from real MNIST images and d a Top-K-like cotangent (``nonzero_per_example`` random units per
    example, the rest exactly zero), both on coarse binary grids: x_c = (pixel - 128) / 256, d = small
    integers / 1024. Every product and partial sum of x_c^T d is then exact in float32, so G has the
    same bits in any summation order: the dense GEMM's (which differs between CPUs) and the sparse
    variant's."""
    ds = load_dataset("mnist", progress=False)
    pixels = ds.train_images[rng.choice(len(ds.train_images), P * 64)][:, :I].astype(np.int32)
    xc = ((pixels - 128) / 256).reshape(P, 64, I).astype(np.float32)
    d = np.zeros((P, 64, O), np.float32)
    for p in range(P):
        for b in range(64):
            units = rng.choice(O, nonzero_per_example, replace=False)
            d[p, b, units] = rng.choice([-7, -5, -3, -1, 1, 2, 4, 6], size=nonzero_per_example) / 1024
    return xc, d


@needs_kernel
@pytest.mark.parametrize("kind", sorted(kernels.KINDS))
@pytest.mark.parametrize("clip", [0.01, None])
@pytest.mark.parametrize("shape,nonzero", [((2, 784, 1000), 64), ((1, 13, 16), 3), ((3, 17, 40), 40)])
def test_sparse_variant_equals_the_dense_kernel(kind, clip, shape, nonzero):
    """The sparse variant (g = x_c^T d built inside the kernel from d's non-zero entries) against the
    dense kernel fed XLA's product: bit for bit where g is exact (real MNIST pixels, see _sparse_case),
    so on every CPU. At the paper's shape with a Top-K-like d, with a row count that leaves a partial
    8-row group, and with a dense d. A NaN in d reaches its unit's weights as through the GEMM. (With
    inexact g the two differ by the sums' order; the engine's proof bounds that, and
    test_fused_training_matches_the_plain_program_within_the_tolerance checks it in training.)"""
    assert kernels.available()
    rng = np.random.default_rng(zlib.crc32(repr((kind, clip, shape)).encode()))
    P, I, O = shape
    xc, d = _sparse_case(rng, P, I, O, nonzero)
    d[0, 5, 3] = np.nan
    _, v, acc, beta, lr, hp = _case(rng, P, I, O)
    if kind == "adam":
        acc = ((rng.normal(size=shape) * 1e-4).astype(np.float32), (np.abs(rng.normal(size=shape)) * 1e-7).astype(np.float32))
        hp = tuple(np.full(P, h, np.float32) for h in (0.9, 0.999, 1 - 0.9**7, 1 - 0.999**7))
    g = jax.jit(lambda xc, d: jnp.einsum("pbi,pbo->pio", xc, d))(xc, d)  # XLA's GEMM, as the dense path has it
    dense = jax.jit(jax.vmap(lambda g, v, a, b, l, h: kernels.fused_update(kind, g, v, a, b, l, h, clip)))(g, v, acc, beta, lr, hp)
    sparse = jax.jit(jax.vmap(lambda x, dd, v, a, b, l, h: kernels.fused_update(kind, None, v, a, b, l, h, clip, xc=x, d=dd)))(
        xc, d, v, acc, beta, lr, hp)
    for name, r, f in zip(("weights", "state", "state"), jax.tree_util.tree_leaves(dense), jax.tree_util.tree_leaves(sparse)):
        r, f = np.asarray(r), np.asarray(f)
        assert r.shape == f.shape
        np.testing.assert_array_equal(f, r, err_msg=name)  # NaN where NaN
    w = np.asarray(sparse[0])
    assert np.isnan(w[0, :, 3]).any() and not np.isnan(w[0, :, 4]).any()  # d's NaN: its unit only, as in the GEMM
    assert (np.abs(w - v)[np.isfinite(w)] > 0).mean() > 0.5  # the weights did move
    assert np.count_nonzero(d) < d.size or nonzero == O  # sparse where meant to be


@needs_kernel
def test_sparse_variant_takes_g_or_xc_and_d():
    assert kernels.available()
    args = _case(np.random.default_rng(0), 1, 8, 8)
    with pytest.raises(ValueError, match="either g or both xc and d"):
        kernels.fused_update("adagrad", None, *args[1:], 0.01)
    with pytest.raises(ValueError, match="either g or both xc and d"):
        kernels.fused_update("adagrad", *args, 0.01, xc=jnp.zeros((4, 8)), d=jnp.zeros((4, 8)))


def test_which_activations_take_the_sparse_variant():
    """Top-K subtract, Top-K mask and LWTA declare that few units per example pass a gradient; the
    variant applies where the fused kernel does and the activation says so."""
    from cl_sweep.components.activations import ACTIVATIONS

    builtin = [ACTIVATIONS[name] for name in ACTIVATIONS if ACTIVATIONS[name].source == "cl_sweep.components.activations"]
    declared = {c.name for c in builtin if c.meta.get("sparse_gradient")}
    assert declared == {"topk_subtract", "topk_mask", "lwta"}
    assert engine.sparse_update_applies(Structure("topk_subtract", "adagrad"))
    assert engine.sparse_update_applies(Structure("lwta", "adam"))
    assert not engine.sparse_update_applies(Structure("hard_ash", "adagrad"))  # the statistics term: d is dense
    assert not engine.sparse_update_applies(Structure("topk_mask", "sgd"))  # no fused kernel for SGD
    assert not engine.sparse_update_applies(Structure("topk_mask", "adagrad", model_static=dict(weight_norm=(False, False))))


@needs_kernel
@pytest.mark.slow
def test_a_users_activation_that_claims_sparsity_wrongly_still_trains_right(mnist_slice):
    """``register_activation(..., sparse_gradient=True)`` only decides speed: an activation whose gradient
    is dense (here a shifted ReLU, about half its units active) trains on the sparse variant within the
    proof's tolerance of the plain program."""
    import cl_sweep
    from cl_sweep.components.activations import ACTIVATIONS

    @cl_sweep.register_activation("claims_sparse_t", sparse_gradient=True)
    def claims_sparse(x, *, shift: float = 0.1):
        return jax.nn.relu(x - shift)

    assert kernels.available()  # builds and registers the kernels in this process
    try:
        structure = Structure("claims_sparse_t", "adagrad")
        assert ACTIVATIONS["claims_sparse_t"].meta == {"sparse_gradient": True}
        assert engine.sparse_update_applies(structure)
        data, split = mnist_slice
        o_hp = {"learning_rate": 1e-2, "initial_accumulator_value": 1e-6}
        members = [Member(0, {"shift": 0.1}, o_hp), Member(1, {"shift": 0.2}, o_hp)]
        states, init_w1 = _train_both_ways(structure, members, {"shift": 0.1}, o_hp, data, split.train_indices[0], steps=5)
        # where this machine's proofs hold: the sparse variant trained it, within the tolerance of the plain program
        _check_kernel_where_used_and_fallback_where_not(structure, states)
        assert np.mean(states[True][0] != init_w1) > 0.5  # trained
    finally:
        ACTIVATIONS.unregister("claims_sparse_t")
        engine._build_programs.cache_clear()


def test_weight_norm_split_parts_rebuild_the_custom_vjp_gradient():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(16, 30)).astype(np.float32))
    v = jnp.asarray(rng.normal(size=(30, 40)).astype(np.float32))
    dout = jnp.asarray(rng.normal(size=(16, 40)).astype(np.float32))

    @jax.jit
    def both(x, v, dout):
        out, vjp = jax.vjp(lambda v: ops.weight_norm_matmul(x, v), v)
        out_split, parts = ops.weight_norm_matmul_split(x, v)
        g, colsum, beta = parts(dout)
        return out, vjp(dout)[0], out_split, g - (v - colsum / v.shape[0]) * beta

    out, dv, out_split, dv_split = both(x, v, dout)
    np.testing.assert_array_equal(_bits(out_split), _bits(out))
    (xc, d), colsum, beta = ops.weight_norm_matmul_split(x, v)[1](dout, dense=False)  # the sparse variant's parts
    np.testing.assert_allclose(xc.T @ d - (v - colsum / v.shape[0]) * beta, dv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dv_split, dv, rtol=1e-5, atol=1e-6)  # the same parts; XLA's roundings may differ
    with pytest.raises(ValueError, match="out > B"):
        ops.weight_norm_matmul_split(x[:, :10], v[:10, :8])


@pytest.fixture(scope="module")
def mnist_slice():
    """Real MNIST, Split-MNIST tasks, 192 training examples per task (3 steps of 64)."""
    ds = load_dataset("mnist", progress=False)
    return engine.to_device(ds), class_incremental_split(ds.train_labels, ds.test_labels, 5, 2)


ASH = {"alpha": 3.0, "z_k": 2.3, "beta": 2.0}
CASES = {
    "hard_ash+adagrad (the default)": (Structure("hard_ash", "adagrad"), ASH, {"learning_rate": 2e-4, "initial_accumulator_value": 1e-6}),
    "hard_ash+rmsprop": (Structure("hard_ash", "rmsprop"), ASH, {"learning_rate": 1e-4, "decay": 0.9}),
    "hard_ash+sgdm": (Structure("hard_ash", "sgdm"), ASH, {"learning_rate": 1e-3, "momentum": 0.9}),
    "hard_ash+adam": (Structure("hard_ash", "adam"), ASH, {"learning_rate": 1e-4, "b1": 0.9, "b2": 0.999}),
    "relu+adam without bias correction": (Structure("relu", "adam", optimizer_static=(("bias_correction", False),)), {},
                                          {"learning_rate": 1e-4, "b1": 0.98, "b2": 0.9995}),
    "relu+adagrad, no clip": (Structure("relu", "adagrad", model_static=dict(update_clip=None)), {}, {"learning_rate": 1e-2, "initial_accumulator_value": 0.1}),
    # the kernel's sparse variant, where the engine uses it (the weight gradient from d's non-zero entries)
    "topk_subtract+adagrad (sparse gradient)": (Structure("topk_subtract", "adagrad"), {"k": 64}, {"learning_rate": 1e-2, "initial_accumulator_value": 1e-6}),
    "lwta+adam (sparse gradient)": (Structure("lwta", "adam", activation_static=(("groups", 50),)), {},
                                    {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999}),
}


def _train_both_ways(structure, members, a_hp, o_hp, data, order, permuted=False, steps=10):
    """Every leaf of the training state after ``steps`` steps of real MNIST, {fused: leaves}."""
    keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in members])
    a = engine._hp_arrays(members, "activation_hp", list(a_hp))
    o = engine._hp_arrays(members, "optimizer_hp", list(o_hp))
    idx = jnp.asarray(np.stack([order[s : s + steps * 64].reshape(steps, 64) for s in (0, 64)][: len(members)]))
    perm = np.arange(784, dtype=np.int32)
    if permuted:
        perm = np.random.default_rng(1).permutation(784).astype(np.int32)
    states = {}
    for fused in (False, True):
        init, train_steps, _ = engine._programs(structure, permuted, fused=fused)
        state = train_steps(
            init(keys, o), data.train_images, data.train_labels, idx, jnp.ones((steps, 64), jnp.float32),
            jnp.int32(0), jnp.int32(steps), a, o, jnp.asarray(perm),
        )
        states[fused] = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state)]
    states["start"] = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(engine._programs(structure, permuted, fused=False)[0](keys, o))]
    init_w1 = np.asarray(engine._programs(structure, permuted, fused=False)[0](keys, o)[0]["w1"])
    return states, init_w1


def _check_kernel_where_used_and_fallback_where_not(structure, states, permuted=False):
    """Where the engine's proof holds on this machine, the kernel trains like the plain program within
    the stated tolerance (bit for bit on the CPU whose XLA code it mirrors); where it does not, the
    engine runs the plain program (that the kernel still computes the same update up to float32
    rounding is test_fused_update_computes_the_optax_chain's)."""
    if engine.fused_update_verified(structure, permuted):
        sparse = engine.sparse_update_applies(structure) and engine.sparse_update_verified(structure, permuted)
        assert engine._programs(structure, permuted) is engine._build_programs(structure, permuted, True, sparse)
        verdict = engine.compare_states(states[False], states[True], start=states["start"])
        assert verdict["passed"], verdict
    else:
        assert engine._programs(structure, permuted) is engine._build_programs(structure, permuted, False, False)
        for plain, fused in zip(states[False], states[True]):
            assert plain.shape == fused.shape


@needs_kernel
@pytest.mark.slow
@pytest.mark.parametrize("population", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_training_matches_the_plain_program_within_the_tolerance(case, population, mnist_slice):
    """At the paper's shapes (784 -> 1000 -> 10, batch 64), 10 steps of real MNIST: every weight and
    optimizer state within `engine.FUSED_UPDATE_TOLERANCE` of the plain program's (of each array's
    largest value), with and without the kernel, wherever the engine uses it."""
    data, split = mnist_slice
    structure, a_hp, o_hp = CASES[case]
    assert engine.fused_update_applies(structure)
    members = [Member(0, a_hp, o_hp), Member(1, a_hp, {**o_hp, "learning_rate": 3 * o_hp["learning_rate"]})][:population]
    states, init_w1 = _train_both_ways(structure, members, a_hp, o_hp, data, split.train_indices[0])
    _check_kernel_where_used_and_fallback_where_not(structure, states)
    # the weights did move: this is not a comparison of two untouched initialisations
    assert np.mean(states[True][0] != init_w1) > 0.5


@needs_kernel
@pytest.mark.slow
def test_fused_population_results_equal_plain_ones(mnist_slice):
    """The whole trainer, default path against the plain program: the same accuracies whether or not
    this machine's proof lets the engine use the kernel."""
    data, split = mnist_slice
    structure, a_hp, o_hp = CASES["hard_ash+adagrad (the default)"]
    members = [Member(s, a_hp, o_hp) for s in (0, 1)]
    results = {}
    for fused in (False, None):  # None: the engine decides (the kernel where its proof holds here)
        original = engine._programs
        engine._programs = lambda s, p=False, f=None, fused=fused: original(s, p, fused)
        try:
            results[fused] = engine.train_population(structure, members, data, split, progress=False, limit_per_task=640)
        finally:
            engine._programs = original
    # Bit for bit where the kernel mirrors this CPU's XLA code; elsewhere float32 rounding may move a few
    # of the 10,000 test images per member across a decision boundary, never a visible share of them.
    assert np.abs(results[None].accuracy_matrix - results[False].accuracy_matrix).max() <= 2e-3
    assert results[None].final_accuracy.min() > 0.15  # trained: above chance (0.1) over the 10 classes


@needs_kernel
@pytest.mark.slow
def test_permuted_and_odd_width_programs(mnist_slice):
    """Permuted MNIST's program (a pixel gather before the first layer) is proved on its own and
    checked like the others; a hidden size that is not a multiple of 8 keeps the plain program."""
    data, split = mnist_slice
    structure, a_hp, o_hp = CASES["hard_ash+adagrad (the default)"]
    members = [Member(0, a_hp, o_hp), Member(1, a_hp, o_hp)]
    states, _ = _train_both_ways(structure, members, a_hp, o_hp, data, split.train_indices[0], permuted=True, steps=5)
    _check_kernel_where_used_and_fallback_where_not(structure, states, permuted=True)
    odd = Structure("hard_ash", "adagrad", model_static=dict(hidden_size=1001))
    assert not engine.fused_update_verified(odd)
    assert engine._programs(odd) is engine._build_programs(odd, False, False, False)


@pytest.fixture
def fresh_proofs(tmp_path, monkeypatch):
    """An empty proof record (the library stays the one already built) and cleared caches."""
    if kernels.available():  # builds the library and sets its key first, in the real cache
        monkeypatch.setenv("CL_SWEEP_DATA_DIR", str(tmp_path))
    engine._fused_update_verified.cache_clear()
    yield tmp_path
    engine._fused_update_verified.cache_clear()


@needs_kernel
@pytest.mark.slow
def test_the_proof_is_recorded_and_reused(fresh_proofs, monkeypatch):
    structure = Structure("hard_ash", "rmsprop", model_static=dict(update_clip=None))
    outcome = engine.fused_update_verified(structure)  # proved here, whichever way it goes on this CPU
    proofs = json.loads(kernels._proofs_file().read_text())
    assert kernels._proofs_file().parent == fresh_proofs / "kernels"
    [recorded] = [v for k, v in proofs.items() if "'rmsprop'" in k and "('update_clip', None)" in k]
    assert recorded["passed"] == outcome and recorded["tolerance"] == engine.FUSED_UPDATE_TOLERANCE
    assert recorded["max_rel_diff"] <= engine.FUSED_UPDATE_TOLERANCE or not outcome
    assert not recorded["identical"] or recorded["max_rel_diff"] == 0  # bit-equal arrays differ by nothing
    # a new process (here: cleared caches) takes the recorded outcome without proving again
    engine._fused_update_verified.cache_clear()
    monkeypatch.setattr(engine, "_prove_fused_update", lambda *a: pytest.fail("proved again"))
    assert engine.fused_update_verified(structure) == outcome


@needs_kernel
@pytest.mark.slow
def test_a_failed_proof_keeps_the_plain_program_and_says_so_once(fresh_proofs, monkeypatch, caplog, mnist_slice):
    """What every machine whose XLA emits other code than the kernel mirrors sees (forced here)."""
    structure = Structure("relu", "adagrad", model_static=dict(update_clip=None, hidden_size=16))
    monkeypatch.setattr(engine, "_prove_fused_update", lambda *a: False)
    with caplog.at_level(logging.DEBUG, logger="cl_sweep"):
        assert not engine.fused_update_verified(structure)
        engine._fused_update_verified.cache_clear()  # as in a later process: the failure is recorded
        assert not engine.fused_update_verified(structure)
    said = [r for r in caplog.records if "fused update kernel is not used" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG]  # once per machine, then debug
    assert "differ from the plain program" in said[0].getMessage() and "\n" not in said[0].getMessage()
    # the engine trains with the plain program, to the plain program's bits
    assert engine._programs(structure) is engine._build_programs(structure, False, False, False)
    data, split = mnist_slice
    members = [Member(0, {}, {"learning_rate": 1e-2, "initial_accumulator_value": 0.1})]
    ours = engine.train_population(structure, members, data, split, progress=False, limit_per_task=128)
    original = engine._programs
    monkeypatch.setattr(engine, "_programs", lambda s, p=False, f=None: original(s, p, False))
    plain = engine.train_population(structure, members, data, split, progress=False, limit_per_task=128)
    np.testing.assert_array_equal(ours.accuracy_matrix, plain.accuracy_matrix)


def test_fused_kernel_refused_where_it_does_not_apply():
    for structure in (
        Structure("hard_ash", "sgd"),
        Structure("hard_ash", "adagrad", model_static=dict(weight_norm=(False, False))),
        Structure("hard_ash", "adagrad", strategy="ewc"),
        Structure("hard_ash", "adagrad", model="sdmlp"),
    ):
        assert not engine.fused_update_applies(structure)
        with pytest.raises(ValueError, match="does not apply"):
            engine._programs(structure, fused=True)


def test_the_proof_tells_rounding_from_a_wrong_update():
    """`engine.compare_states`, the proof's rule, on one Adagrad-like step of a [784, 64] weight: bit-equal
    states are identical; float32 rounding (an ulp of every weight) passes; a learning rate off by 0.1 %
    fails by far, as do a NaN where the plain program has a number, another shape and a flipped flag."""
    rng = np.random.default_rng(0)
    w = (0.1 * rng.normal(size=(784, 64))).astype(np.float32)
    acc = rng.uniform(0.1, 1.0, size=(784, 64)).astype(np.float32)
    flags = np.array([True, False])
    start, plain = [w, flags], [w - np.float32(0.01) * acc, flags]
    same = engine.compare_states(plain, [plain[0].copy(), flags.copy()], start=start)
    assert same == {"identical": True, "passed": True, "max_rel_diff": 0.0, "tolerance": engine.FUSED_UPDATE_TOLERANCE}
    rounding = engine.compare_states(plain, [np.nextafter(plain[0], np.float32(np.inf)), flags], start=start)
    assert rounding["passed"] and not rounding["identical"] and 0 < rounding["max_rel_diff"] < engine.FUSED_UPDATE_TOLERANCE / 10
    wrong = engine.compare_states(plain, [w - np.float32(0.01 * 1.001) * acc, flags], start=start)
    assert not wrong["passed"] and wrong["max_rel_diff"] > 5 * engine.FUSED_UPDATE_TOLERANCE
    nan = plain[0].copy()
    nan[0, 0] = np.nan
    assert not engine.compare_states(plain, [nan, flags], start=start)["passed"]
    assert not engine.compare_states(plain, [plain[0][:10], flags], start=start)["passed"]
    assert not engine.compare_states(plain, [plain[0], ~flags], start=start)["passed"]
    assert engine.compare_states([nan], [nan.copy()])["identical"]  # NaN at the same place, same bits
    # an array training did not move must come out bit for bit
    assert not engine.compare_states([w], [np.nextafter(w, np.float32(np.inf))], start=[w])["passed"]


@needs_kernel
@pytest.mark.slow
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("case", ["hard_ash+adagrad (the default)", "topk_subtract+adagrad (sparse gradient)"])
def test_training_is_deterministic_on_one_path(fused, case, mnist_slice):
    """The same members trained twice in a row give the same bits, with the kernel and without it
    (whichever this machine's proof would pick); for Top-K with the kernel, its sparse variant
    wherever this machine's proof lets the engine use it."""
    data, split = mnist_slice
    structure, a_hp, o_hp = CASES[case]
    members = [Member(s, a_hp, o_hp) for s in (0, 1)]
    original = engine._programs
    engine._programs = lambda s, p=False, f=None: original(s, p, fused)
    try:
        first, second = (engine.train_population(structure, members, data, split, progress=False, limit_per_task=320)
                         for _ in range(2))
    finally:
        engine._programs = original
    np.testing.assert_array_equal(first.accuracy_matrix, second.accuracy_matrix)
    np.testing.assert_array_equal(first.active_fraction, second.active_fraction)


@pytest.mark.slow
def test_switch_turns_the_kernel_off():
    code = "from cl_sweep.training import kernels; print(kernels.available())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, kernels.ENV_SWITCH: "0"}, check=True
    )
    assert out.stdout.strip() == "False"


@pytest.mark.slow
@pytest.mark.parametrize("switch", ["1", "0"])
def test_result_records_the_fast_paths_that_trained_it(tmp_path, switch):
    """`versions.fast_paths` says how a job was trained: what `engine.fast_paths` chooses in that process
    (whichever path this machine takes), and the plain program and radix select with the kernels off."""
    from conftest import run_cli
    from cl_sweep.results import read_result

    args = ["activation=topk_subtract", "optimizer=adagrad", "benchmark.limit_per_task=64", "n_seeds=1", "progress=false",
            f"hydra.run.dir={tmp_path}"]
    proc = run_cli(*args, env={kernels.ENV_SWITCH: switch})
    assert proc.returncode == 0, proc.stderr[-2000:]
    recorded = read_result(tmp_path / "result.json")["versions"]["fast_paths"]
    code = ("import json; from cl_sweep.training import engine; "
            "print(json.dumps(engine.fast_paths(engine.Structure('topk_subtract', 'adagrad', input_size=784, num_classes=10))))")
    here = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, kernels.ENV_SWITCH: switch})
    assert recorded == json.loads(here.stdout.strip().splitlines()[-1])
    assert recorded["backend"] == "cpu"
    if switch == "0":
        assert recorded == {"backend": "cpu", "fused_update": False, "sparse_gradient": False, "kth_largest": "radix"}
    else:
        assert recorded["kth_largest"] == ("kernel" if _supported_here() else "radix")
        # Top-K subtract + Adagrad: the sparse variant wherever the fused kernel runs and its own proof holds
        assert recorded["sparse_gradient"] == (recorded["fused_update"] and engine.sparse_update_verified(
            engine.Structure("topk_subtract", "adagrad", input_size=784, num_classes=10)))


@needs_kernel
def test_build_is_cached_per_source_and_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CL_SWEEP_DATA_DIR", str(tmp_path))
    lib = kernels._build()
    assert lib.parent == tmp_path / "kernels" and lib.exists()
    mtime = lib.stat().st_mtime_ns
    assert kernels._build() == lib and lib.stat().st_mtime_ns == mtime  # the second call compiles nothing
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == [lib.name]  # no temporary left behind


@needs_kernel
def test_compiler_failure_is_reported_and_falls_back(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(kernels, "_registered", False)  # as in a new process: build and register again
    monkeypatch.setenv("CL_SWEEP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(Path(sys.executable).parent / "no-such-compiler"))
    with pytest.raises(Exception):
        kernels._build()
    kernels.available.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG, logger="cl_sweep"):
            assert kernels.available() is False
            kernels.available.cache_clear()
            assert kernels.available() is False  # a later process: said at debug level only
        said = [r for r in caplog.records if "CPU kernels are not used" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG]
        assert "no-such-compiler" in said[0].getMessage() and "\n" not in said[0].getMessage()
    finally:
        kernels.available.cache_clear()
        monkeypatch.undo()  # CXX and CL_SWEEP_DATA_DIR as they were (a caller's cache dir included)
        assert kernels.available()  # later tests in this process get the kernel back
