"""Two C++ CPU kernels for the hottest parts of a training step, as XLA FFI calls.

1. ``fused_update.cc``: the first layer's weight-norm gradient + Adagrad/RMSprop/SGDM/Adam step + update clip
   in one pass. On the CPU a training step of the paper's MLP is memory-bound around its two
   GEMMs. For the 784 × 1000 first layer XLA:CPU writes the weight-norm gradient
   ``dv = G - (v - mu) * beta``, the optimizer's accumulator and the clipped update as three
   separate loops (this backend has no multi-output fusion), reading and writing 3 MB arrays
   eleven times per model per step; the kernel reads ``G``, ``v``, ``acc`` and writes ``v``, ``acc``
   once (Adam: its two moments). ``benchmarks/step_time.py --ablation`` / ``--optimizers`` measure what that saves.
   Its sparse variant (Top-K, LWTA: ``fused_update(..., xc=, d=)``) also builds ``G = x_c^T d`` itself from
   the few non-zero entries of ``d``, so the dense GEMM and ``G``'s round trip through memory go.
2. ``kth_largest.cc``: the k-th largest value of each row (Top-K's threshold) and the index
   ``lax.top_k`` reports for it, a byte-wise radix select over the surviving candidates instead of
   32 compare+count passes over every unit (cl_sweep.training.ops.kth_largest).

Same numbers. The k-th largest is exact either way. The fused update was written to repeat,
operation by operation, what XLA:CPU emits for the engine's plain program on one CPU (the same
fused multiply-adds where XLA's LLVM backend contracts them, including in the remainder of its
unrolled loop, and XLA's rsqrt: the AVX hardware estimate refined by one Newton step); there
training with it is bit-identical to training without it. Which multiply-adds XLA contracts
depends on the CPU and on how it fuses the program at the given shapes, so the engine proves, on
the machine it runs on and at the structure's own shapes, that the two agree within a stated
tolerance before it uses the kernel (``engine.fused_update_verified``,
``engine.FUSED_UPDATE_TOLERANCE``), and otherwise keeps the plain program and says so once;
``tests/test_kernels.py`` checks it at the paper's shapes. Either way a job is deterministic on
one machine and path, and ``versions.fast_paths`` in its result file says which path it took.

How they are built. The sources are compiled on first use with the system's ``g++``
(``-O3 -march=native``, against the XLA FFI headers shipped in jaxlib) into
``<cache dir>/kernels/`` (the data cache, see cl_sweep.data.datasets.cache_dir), keyed by the sources, the
jaxlib version and the CPU's flags, and registered as XLA FFI targets. Only x86-64 CPUs with AVX
and FMA are supported (the instructions the kernels are written with); elsewhere, without a
compiler, on a GPU, or with ``CL_SWEEP_CPU_KERNELS=0`` the engine runs the plain XLA program
and ``kth_largest`` its radix select.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import inspect
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cl_sweep.training.compile_cache import cpu_flags as _cpu_flags

__all__ = ["KINDS", "available", "eps_for", "fused_update", "kernel_hp", "kth_largest", "not_used", "param_state", "reference_update", "replace_param_state"]

SOURCES = (Path(__file__).with_name("fused_update.cc"), Path(__file__).with_name("kth_largest.cc"))
HEADERS = (Path(__file__).with_name("parallel.h"),)
# optimizer name -> FFI target of its fused update
KINDS = {"adagrad": "cl_sweep_fused_adagrad", "rmsprop": "cl_sweep_fused_rmsprop", "sgdm": "cl_sweep_fused_sgdm",
         "adam": "cl_sweep_fused_adam"}
# optimizer name -> the hyperparameter the kernel takes as ``hp`` (None: none, passed as 0; Adam: see fused_update)
HP = {"adagrad": None, "rmsprop": "decay", "sgdm": "momentum", "adam": None}
# optimizer name -> FFI target of its sparse variant (the weight gradient built from d's non-zero entries)
SPARSE_KINDS = {kind: target.replace("_fused_", "_sparse_") for kind, target in KINDS.items()}
KTH_LARGEST = "cl_sweep_kth_largest"
# FFI target -> the handler symbol in the library
_SYMBOLS = {
    **{target: "ClSweepFused" + kind.capitalize() for kind, target in KINDS.items()},
    **{target: "ClSweepSparse" + kind.capitalize() for kind, target in SPARSE_KINDS.items()},
    KTH_LARGEST: "ClSweepKthLargest",
}
ENV_SWITCH = "CL_SWEEP_CPU_KERNELS"
log = logging.getLogger(__name__)


def eps_for(kind: str) -> float:
    """The eps optax uses for ``kind`` (its default: cl_sweep's factories never set it); 0 for SGDM, which has none."""
    if kind == "sgdm":
        return 0.0
    return float(inspect.signature(getattr(optax, kind)).parameters["eps"].default)


_FLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-w"]


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _build_key(cxx: str | None) -> str:
    """What the library depends on: the sources, jax, the compiler and its flags, the CPU."""
    return hashlib.sha256(
        "\0".join([*(src.read_text() for src in SOURCES + HEADERS), jax.__version__, str(cxx), " ".join(_FLAGS), platform.machine(), _cpu_flags()]).encode()
    ).hexdigest()[:16]


def _build() -> Path:
    """Compiles the kernel into the cache (once per source, jaxlib and CPU) and returns the library."""
    from cl_sweep.data.datasets import cache_dir

    include = jax.ffi.include_dir()
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++) on PATH")
    key = _build_key(cxx)
    out_dir = cache_dir() / "kernels"
    lib = out_dir / f"cl_sweep_kernels-{key}.so"
    global _LIB_KEY
    _LIB_KEY = key
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent processes (parallel launchers) never see half a file.
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_lib = Path(tmp) / lib.name
        proc = subprocess.run([cxx, *_FLAGS, f"-I{include}", *map(str, SOURCES), "-o", str(tmp_lib)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed on {', '.join(src.name for src in SOURCES)}:\n{proc.stderr.strip()[-2000:]}")
        os.replace(tmp_lib, lib)
    return lib


_LIB_KEY: str | None = None  # the built library's key: proofs are only valid for that library
_registered = False  # the FFI targets are registered in this process


def _proofs_file() -> Path:
    from cl_sweep.data.datasets import cache_dir

    return cache_dir() / "kernels" / f"proofs-{_LIB_KEY}.json"


def recorded_proof(key: str) -> dict | bool | None:
    """A stored outcome of a proof (see engine.fused_update_verified: ``identical``, ``passed``,
    ``max_rel_diff``, ``tolerance``) for this library, or None."""
    try:
        return json.loads(_proofs_file().read_text()).get(key)
    except (OSError, ValueError):
        return None


def record_proof(key: str, ok: dict | bool) -> None:
    """Stores a proof's outcome beside the library, so later processes skip it (a lost race only costs a re-run)."""
    path = _proofs_file()
    try:
        proofs = json.loads(path.read_text())
    except (OSError, ValueError):
        proofs = {}
    proofs[key] = ok
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump(proofs, f, indent=1, sort_keys=True)
        os.replace(f.name, path)
    except OSError:
        pass  # a read-only cache: the proof runs again next time


def reference_update(kind, g, v, acc, beta, lr, hp, clip):
    """The unfused computation, as the engine's plain path does it: ``dv`` (cl_sweep.training.ops), then the
    registered optimizer's optax chain with the update clip.

    Returns (new v, new accumulator) for one member [in, out] (``jax.vmap`` it for a population).
    """
    from cl_sweep.components.optimizers import get_optimizer, with_update_clip

    dv = g - (v - jnp.mean(v, axis=0, keepdims=True)) * beta
    hps = {"learning_rate": lr, "initial_accumulator_value": 0.0} if kind == "adagrad" else {"learning_rate": lr, HP[kind]: hp}
    tx = with_update_clip(get_optimizer(kind).factory(**hps), clip)  # the registered optimizer, as the engine builds it
    state = replace_param_state(tx.init({"w": v}), "w", acc)
    u, new_state = tx.update({"w": dv}, state, {"w": v})
    return optax.apply_updates({"w": v}, u)["w"], param_state(new_state, "w")


def adam_hp(opt_state, b1, b2, bias_correction: bool = True) -> tuple:
    """Adam's ``hp`` for :func:`fused_update` after the step that produced ``opt_state``: (b1, b2, bc1, bc2)
    with optax's bias corrections 1 - b^t at its (already incremented) count t, or 1 without them."""
    if not bias_correction:
        one = jnp.ones_like(jnp.asarray(b1, jnp.float32))
        return b1, b2, one, one
    [count] = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
               if any(isinstance(k, jax.tree_util.GetAttrKey) and k.name == "count" for k in path)]
    return b1, b2, 1 - b1**count, 1 - b2**count


def kernel_hp(kind: str, opt_state, opt_hp, opt_static):
    """The ``hp`` :func:`fused_update` takes for ``kind`` after the step that produced ``opt_state``:
    Adam's (b1, b2, bc1, bc2), else the one hyperparameter of :data:`HP` (0 for Adagrad)."""
    if kind == "adam":
        return adam_hp(opt_state, opt_hp["b1"], opt_hp["b2"], opt_static.get("bias_correction", True))
    return opt_hp[HP[kind]] if HP[kind] else 0.0


def fused_update(kind, g, v, acc, beta, lr, hp, clip, colsum=None, *, xc=None, d=None):
    """Same as :func:`reference_update`, in one pass (requires :func:`available`).

    ``colsum``, ``v``'s column sums [1, out], is computed here unless the caller already has it.
    For Adam ``acc`` is the pair (mu, nu) and ``hp`` the tuple (b1, b2, bc1, bc2) (:func:`adam_hp`);
    it returns (v, (mu, nu)).

    The sparse variant: ``g=None`` and ``xc`` [B, in], ``d`` [B, out] with ``g = xc.T @ d``
    (`cl_sweep.training.ops.weight_norm_matmul_split`'s ``grad_parts(dout, dense=False)``). The kernel
    then builds ``g`` itself, 8 rows at a time, from the non-zero entries of ``d`` only, and never
    writes it to memory: fast where ``d`` is sparse (Top-K, LWTA), right for any ``d``. Its sums run
    in another order than the GEMM's, so the two agree in float32 rounding, not bit for bit.
    """
    if (g is None) == (xc is None or d is None) or (xc is None) != (d is None):
        raise ValueError("fused_update takes either g or both xc and d")
    colsum = jnp.sum(v, axis=-2, keepdims=True) if colsum is None else colsum
    targets = KINDS if g is not None else SPARSE_KINDS
    grad = (g,) if g is not None else (xc, d)  # the kernel's leading operands
    first = len(grad)  # index of v among the operands
    inv_m = np.float32(1.0) / np.float32(jnp.shape(v)[-2])  # the constant XLA multiplies a mean by
    shape = jax.ShapeDtypeStruct(jnp.shape(v), jnp.float32)
    if kind == "adam":
        mu, nu = acc
        hp4 = jnp.stack([jnp.asarray(h, jnp.float32) for h in hp], axis=-1)
        call = jax.ffi.ffi_call(targets[kind], (shape, shape, shape), vmap_method="broadcast_all",
                                input_output_aliases={first: 0, first + 1: 1, first + 2: 2})
        v, mu, nu = call(
            *grad, v, mu, nu, colsum, beta, jnp.asarray(lr, jnp.float32), hp4,
            inv_m=inv_m, eps=np.float32(eps_for(kind)), clip=np.float32(clip or 0.0), threads=np.int64(os.cpu_count() or 1),
        )
        return v, (mu, nu)
    # Outputs may overwrite v and acc in place (each element is read before it is written): inside
    # the training loop XLA then writes straight into the loop-carried buffers instead of copying.
    call = jax.ffi.ffi_call(targets[kind], (shape, shape), vmap_method="broadcast_all",
                            input_output_aliases={first: 0, first + 1: 1})
    return call(
        *grad, v, acc, colsum, beta, jnp.asarray(lr, jnp.float32), jnp.asarray(hp, jnp.float32),
        inv_m=inv_m, eps=np.float32(eps_for(kind)), clip=np.float32(clip or 0.0), threads=np.int64(os.cpu_count() or 1),
    )


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Builds, registers and checks the kernel once per process; False when it can't be used (said once per machine)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return False
    if jax.default_backend() != "cpu":
        return False
    if platform.machine() not in ("x86_64", "AMD64") or not {"avx", "fma"} <= set(_cpu_flags().split()):
        return False
    global _registered
    if _registered:  # XLA keeps the first library's handlers for the life of the process
        return True
    try:
        lib = ctypes.cdll.LoadLibrary(str(_build()))
        for target, symbol in _SYMBOLS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        _registered = True
    except Exception as exc:  # noqa: BLE001 - any failure means: use the plain XLA program
        problem = f"{type(exc).__name__}: {exc}".splitlines()[0]
        not_used(problem, first_time=_first_report(f"build-{_build_key(_compiler())}", problem))
        return False
    return True


def _first_report(name: str, problem: str) -> bool:
    """True the first time this machine reports ``name`` (a marker file in the kernel cache), else False."""
    from cl_sweep.data.datasets import cache_dir

    marker = cache_dir() / "kernels" / f"reported-{name}.txt"
    if marker.exists():
        return False
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(problem + "\n")
    except OSError:
        pass  # a read-only cache: say it every time rather than never
    return True


def not_used(problem: str, what: str = "the CPU kernels are", first_time: bool = True) -> None:
    """Logs that a kernel is not used and why: the run goes on with the plain program (same numbers, slower).

    One clean log line (no warning with its source line) the first time on a machine; later
    processes, which find the outcome recorded in the cache, log it at debug level only.
    """
    log.log(
        logging.WARNING if first_time else logging.DEBUG,
        f"cl_sweep: {what} not used ({problem}); training runs the plain XLA program instead "
        f"(same numbers, slower). Said once on this machine; set {ENV_SWITCH}=0 to skip the kernels.",
    )


def kth_largest(x: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row of ``x`` [..., H]: the k-th largest value [..., 1] and the index ``lax.top_k`` reports for it
    [..., 1] (-1 for ``k`` outside 1..H, whose value is a NaN). ``k``: int32 of shape ``x.shape[:-1]``.
    Requires :func:`available`; cl_sweep.training.ops.kth_largest is the public entry point."""
    out = (jax.ShapeDtypeStruct(x.shape[:-1] + (1,), jnp.float32), jax.ShapeDtypeStruct(x.shape[:-1] + (1,), jnp.int32))
    return jax.ffi.ffi_call(KTH_LARGEST, out, vmap_method="broadcast_all")(x, k, threads=np.int64(os.cpu_count() or 1))


def _is_param(path, name: str) -> bool:
    return any(isinstance(k, jax.tree_util.DictKey) and k.key == name for k in path)


def _moment(path) -> str | None:
    return next((k.name for k in path if isinstance(k, jax.tree_util.GetAttrKey) and k.name in ("mu", "nu")), None)


def param_state(opt_state, name: str):
    """The optimizer state that belongs to parameter ``name``: its one leaf (Adagrad's or RMSprop's
    accumulator, SGDM's trace), or Adam's pair (mu, nu)."""
    found = [(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0] if _is_param(path, name)]
    if len(found) == 2 and sorted(_moment(p) or "" for p, _ in found) == ["mu", "nu"]:
        return tuple(leaf for m in ("mu", "nu") for p, leaf in found if _moment(p) == m)
    if len(found) != 1:
        raise ValueError(f"expected one optimizer-state leaf for {name!r} (or Adam's mu and nu), found {len(found)}")
    return found[0][1]


def replace_param_state(opt_state, name: str, value):
    """``opt_state`` with parameter ``name``'s state replaced by ``value`` (a leaf, or Adam's (mu, nu))."""
    def swap(path, leaf):
        if not _is_param(path, name):
            return leaf
        return value[("mu", "nu").index(_moment(path))] if isinstance(value, tuple) else value

    return jax.tree_util.tree_map_with_path(swap, opt_state)
