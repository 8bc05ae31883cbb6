"""The vectorised train/evaluate engine: a population of models (seeds × grid points) in one XLA program.

A *structure* fixes everything that shapes the compiled program (activation and optimizer kind,
static hyperparameters such as LWTA's groups, hidden size, weight norm, update clip). A
*member* is one model: its seed and its traced hyperparameters. All members of a structure train
together: ``vmap`` over members, ``lax.fori_loop`` over steps with traced bounds, no host round
trip per step. Because hyperparameters and loop bounds are traced, another job (or another task)
of the same structure reuses the compiled program.

On an x86-64 CPU the first layer's weight-norm gradient, optimizer step and clip (Adagrad,
RMSprop, SGDM, Adam) run as one fused C++ kernel (cl_sweep.training.kernels), used only once this
machine's proof finds it training like the plain program within `FUSED_UPDATE_TOLERANCE` (bit for
bit where it mirrors the CPU's XLA code; `fused_update_verified`). For Top-K and LWTA its sparse
variant also builds the weight gradient from the few non-zero entries of the activation's gradient
(`sparse_update_applies`, `sparse_update_verified`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from tqdm.auto import tqdm

from cl_sweep.training import kernels, ops
from cl_sweep.components.activations import get_activation
from cl_sweep.models import Model, build_cached
from cl_sweep.models.mlp import INPUT_SIZE, NUM_CLASSES
from cl_sweep.components import strategies
from cl_sweep.components.optimizers import get_optimizer, with_update_clip
from cl_sweep.data.tasks import TaskSplit, batch_schedule, num_steps, task_order

# Progress-bar granularity: each task runs as this many device calls (a cheap host sync each).
CHUNKS_PER_TASK = 8
# Padded schedule lengths are rounded up to this many steps, so different slice sizes share programs.
STEP_BUCKET = 32


def default_max_population() -> int:
    """Models per compiled call when the user sets none: measured by benchmarks/step_time.py.

    On a 2-core CPU, 2 models per call gave the most model-steps per second (larger populations
    spill the weights and optimizer state out of cache); an accelerator wants hundreds.
    """
    return 2 if jax.default_backend() == "cpu" else 256


# Population sizes each (structure, permuted) program has been compiled for in this process.
_COMPILED_SIZES: dict[tuple[Any, bool], set[int]] = {}


def padded_population(
    n: int, cap: int, structure: "Structure | None" = None, permuted: bool = False, expect: int | None = None
) -> int:
    """Members per compiled call for ``n`` models: the population size is a static shape, so each
    new size compiles the train program again (seconds on a GPU, for every structure of a sweep).

    On an accelerator the smallest size already compiled for this structure that fits ``n`` is
    reused (a few idle members cost a GPU far less than a compilation); failing that, ``n`` is
    rounded up to a power of two (at most ``cap``); ``expect``, the largest call the caller will
    make for this structure, is rounded instead when larger, so that that call fits the same
    program. The padding members repeat the last member and their results are dropped. On the
    CPU a padding member costs as much as a real one, so ``n`` stays.
    """
    if n < 1 or jax.default_backend() == "cpu":
        return n
    fitting = [p for p in _COMPILED_SIZES.get((structure, permuted), ()) if p >= n]
    if fitting:
        return min(fitting)
    m = max(n, min(cap, expect or n))
    return max(n, min(cap, 1 << (m - 1).bit_length()))


def _frozen(value: Any) -> Any:
    """Lists (a config's) as tuples, so a structure is hashable."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class Structure:
    """What changes the compiled program. Hashable: it keys the compilation cache.

    ``model`` names a registered model (cl_sweep.models) and ``model_static`` holds its
    hyperparameters, (key, value) pairs or a dict; keys left out take the model's defaults
    (``Structure("hard_ash", "adagrad")`` is the paper's MLP).
    """

    activation: str
    optimizer: str
    activation_static: tuple[tuple[str, Any], ...] = ()
    optimizer_static: tuple[tuple[str, Any], ...] = ()
    num_classes: int = NUM_CLASSES  # both follow the data set (train_jobs fills them in)
    input_size: int = INPUT_SIZE
    strategy: str = "none"  # a continual-learning regulariser (cl_sweep.components.strategies)
    strategy_static: tuple[tuple[str, Any], ...] = ()
    model: str = "mlp"
    model_static: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        items = self.model_static.items() if isinstance(self.model_static, Mapping) else self.model_static
        object.__setattr__(self, "model_static", tuple((k, _frozen(v)) for k, v in items))


def regulariser_of(structure: Structure) -> "strategies.Regulariser | None":
    """The structure's strategy at its default traced hyperparameters: None when it adds no
    regulariser (`none`); else its parts that do not depend on traced values (``importance``)."""
    return strategies.regulariser(structure.strategy, dict(structure.strategy_static))


def model_of(structure: Structure) -> Model:
    """The structure's network as the engine trains it (built once per structure and data shape)."""
    return build_cached(structure.model, structure.model_static, structure.input_size, structure.num_classes)


@dataclass(frozen=True)
class Member:
    """One model of a population: its seed and its traced hyperparameters."""

    seed: int
    activation_hp: Mapping[str, float] = field(default_factory=dict)
    optimizer_hp: Mapping[str, float] = field(default_factory=dict)
    strategy_hp: Mapping[str, float] = field(default_factory=dict)


@dataclass
class PopulationResult:
    """Per member: the T×T accuracy matrix, overall accuracy after each task, sparsity, divergence."""

    accuracy_matrix: np.ndarray  # [P, T, T]; row i = per-task test accuracy after task i; NaN = not evaluated
    overall_accuracy: np.ndarray  # [P, T]; accuracy on the whole test set after each task
    diverged: np.ndarray  # [P] bool; loss became NaN/inf at some step
    wall_time_s: float
    active_fraction: np.ndarray | None = None  # [P, T]; share of non-zero hidden units on the test set
    tasks_trained: np.ndarray | None = None  # [P] int; T unless a listener stopped the member earlier
    # accuracy_matrix and overall_accuracy on the held-out validation examples (`TaskSplit.validation_indices`); None without them.
    validation_matrix: np.ndarray | None = None  # [P, T, T]
    validation_overall: np.ndarray | None = None  # [P, T]
    # Per-task test accuracy of the untrained models (the random-initialisation row forward transfer
    # needs; NaN where a task is not evaluated, as in the matrix).
    initial_accuracy: np.ndarray | None = None  # [P, T]
    # Per-class test accuracy of the final models (their last task's inputs); NaN for a stopped member.
    class_accuracy: np.ndarray | None = None  # [P, C]
    train_loss: np.ndarray | None = None  # [P, T]; mean training loss of each task; NaN without a loss
    curve: Curve | None = None  # the evaluations every ``eval_every`` steps; None without it

    @property
    def final_accuracy(self) -> np.ndarray:
        return self.overall_accuracy[:, -1]

    @property
    def validation_accuracy(self) -> np.ndarray | None:
        """[P] validation accuracy after the last task, or None without a validation set."""
        return None if self.validation_overall is None else self.validation_overall[:, -1]


@dataclass(frozen=True)
class Curve:
    """Test accuracy during training (``run_tasks``'s ``eval_every``): K evaluation points, the first
    before any step, then every ``eval_every`` optimizer steps (counted over all tasks) and after
    each task. ``task[k]`` is the (0-based) task trained when point k was evaluated; a task ends at
    the last point with its index."""

    step: np.ndarray  # [K] int; optimizer steps taken so far, over all tasks
    task: np.ndarray  # [K] int
    overall: np.ndarray  # [P, K]; NaN for a member stopped earlier
    per_task: np.ndarray  # [P, K, T]; as an accuracy-matrix row (NaN where a task is not evaluated)


@dataclass(frozen=True)
class EvalPoint:
    """One evaluation inside a task (``eval_every``), handed to an ``on_eval`` listener: the real
    members' test accuracy after ``step`` optimizer steps (over all tasks) while training ``task``."""

    step: int
    task: int  # 0-based
    num_tasks: int
    seeds: tuple[int, ...]  # [P]
    overall_accuracy: np.ndarray  # [P]; NaN for a stopped member
    per_task: np.ndarray  # [P, T]


@dataclass(frozen=True)
class TaskEnd:
    """What the host loop knows after a task, handed to an ``on_task_end`` listener (trackers, pruners).

    Arrays hold the population's real members (``seeds[p]`` is member p's seed); rows after
    ``task`` are still NaN/0. Built on the host from numbers the loop already fetched: listening
    adds no device sync.
    """

    task: int  # 0-based index of the task just trained and evaluated
    num_tasks: int
    seeds: tuple[int, ...]  # [P]
    accuracy_matrix: np.ndarray  # [P, T, T] as in PopulationResult, filled up to row ``task``
    overall_accuracy: np.ndarray  # [P, T]
    active_fraction: np.ndarray  # [P, T]
    diverged: np.ndarray  # [P] bool, as of the end of this task
    steps: int  # optimizer steps each member took in this task
    elapsed_s: float  # since the population's call started, compilation included
    stopped: np.ndarray | None = None  # [P] bool: stopped at an earlier boundary (its rows stay NaN)
    train_loss: np.ndarray | None = None  # [P, T]: each task's mean training loss, NaN for a program without one
    global_step: int = 0  # optimizer steps each member took up to the end of this task, over all tasks
    # [P, T]: running accuracy on the held-out validation examples (None: the benchmark holds none out).
    # A pruner reads it instead of ``overall_accuracy`` so a sweep that selects by validation never sees test accuracy.
    validation_overall: np.ndarray | None = None


@dataclass(frozen=True)
class DeviceData:
    """A dataset resident on the accelerator as uint8, plus its labels."""

    train_images: jax.Array  # [N, input size] uint8 (784 for MNIST)
    train_labels: jax.Array  # [N] int32
    test_images: jax.Array  # [M, input size] uint8
    test_labels: jax.Array  # [M] int32


def to_device(dataset) -> DeviceData:
    """Puts a `cl_sweep.data.datasets.Dataset` on the default device (uint8 images: 47 MB for MNIST)."""
    return DeviceData(
        jnp.asarray(dataset.train_images, jnp.uint8),
        jnp.asarray(dataset.train_labels, jnp.int32),
        jnp.asarray(dataset.test_images, jnp.uint8),
        jnp.asarray(dataset.test_labels, jnp.int32),
    )


def _hp_arrays(members: Sequence[Member], attr: str, names: Sequence[str]) -> dict[str, jax.Array]:
    """Stacks each hyperparameter over members into a [P] array (int32 for integers, else float32)."""
    out = {}
    for name in names:
        values = [getattr(m, attr)[name] for m in members]
        is_int = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
        out[name] = jnp.asarray(values, jnp.int32 if is_int else jnp.float32)
    return out


def fused_update_applies(structure: Structure) -> bool:
    """Whether the structure's first layer can take the fused weight-norm + optimizer kernel
    (cl_sweep.training.kernels): a model that declares a weight-normalised input layer (`FusedInputLayer`:
    the paper's MLP with weight norm on layer 1), Adagrad or RMSprop, no regulariser, no global
    gradient clip. Whether this machine can run the kernel is `kernels.available`."""
    model = model_of(structure)
    return (
        model.fused is not None
        and structure.optimizer in kernels.KINDS
        and regulariser_of(structure) is None
        and not model.grad_clip_norm
    )


def sparse_update_applies(structure: Structure) -> bool:
    """Whether the fused kernel's sparse variant applies: `fused_update_applies`, and the activation was
    registered with ``sparse_gradient=True`` (Top-K subtract, Top-K mask, LWTA: only a few units per
    example pass a gradient, so the first layer's weight gradient is built from those entries alone,
    inside the kernel, instead of by a dense GEMM). Whether it is used is `sparse_update_verified`."""
    return fused_update_applies(structure) and bool(get_activation(structure.activation).meta.get("sparse_gradient"))


@jax.jit
def _diverged(params, diverged: jax.Array) -> jax.Array:
    """``diverged`` or-ed with each member's "some weight is not finite" [P]: one program, not one per op."""
    finite = [jnp.all(jnp.isfinite(w), axis=tuple(range(1, w.ndim))) for w in jax.tree_util.tree_leaves(params)]
    return diverged | ~functools.reduce(jnp.logical_and, finite)


def _programs(structure: Structure, permuted: bool = False, fused: bool | None = None):
    """Builds and jits (init, train_steps, evaluate) for a structure; cached per process.

    With ``permuted`` the inputs are shown through a per-task pixel permutation (a traced
    [784] index array), so all tasks of permuted MNIST share one program. ``fused`` (None: when
    `fused_update_applies` and `kernels.available`) updates the first layer with the fused CPU
    kernel (None: where this machine's proof passes, `fused_update_verified`); the numbers agree
    within `FUSED_UPDATE_TOLERANCE` (bit for bit on the CPU the kernel mirrors), and each path is
    deterministic.
    """
    if fused is None:
        fused = fused_update_applies(structure) and fused_update_verified(structure, permuted)
    elif fused and not (fused_update_applies(structure) and kernels.available()):
        raise ValueError(f"the fused update kernel does not apply to {structure} or is not available here")
    return _build_programs(structure, permuted, fused, fused and _sparse_chosen(structure, permuted))


def fast_paths(structure: Structure, permuted: bool = False) -> dict[str, Any]:
    """How this process trains ``structure``, as a result file's ``versions.fast_paths`` records it:
    the backend, whether the first layer's update runs in the fused CPU kernel (`_programs`' own
    choice; a model with its own rule, FlyModel, never does), whether that kernel builds the weight
    gradient from the activation's non-zero gradient entries (``sparse_gradient``,
    `sparse_update_verified`) and which k-th-largest select any Top-K
    threshold uses (`ops.kth_largest`: ``kernel`` on a CPU whose kernels build, else ``radix``).
    The k-th-largest selects give the same numbers; the fused update agrees with the plain program
    within `FUSED_UPDATE_TOLERANCE` (bit for bit where it mirrors this CPU's XLA code). The record
    says how a result was made."""
    fused = model_of(structure).trainer is None and fused_update_applies(structure) and fused_update_verified(structure, permuted)
    sparse = fused and _sparse_chosen(structure, permuted)
    cpu = jax.default_backend() == "cpu"
    return {
        "backend": jax.default_backend(),
        "fused_update": bool(fused),
        "sparse_gradient": bool(sparse),
        "kth_largest": "kernel" if cpu and kernels.available() else "radix",
    }


#: How far the fused kernel's training may stray from the plain XLA program's, and still be used:
#: after the proof's three steps, every weight and optimizer state within this fraction of how far
#: training moved that array (|fused - plain| <= FUSED_UPDATE_TOLERANCE * max|plain - start|, NaN
#: where the plain program has NaN). Where the kernel is not bit-identical (another CPU's XLA
#: contracts other multiply-adds) the two differ by float32 rounding: 1.1e-5 at most on an Intel
#: Xeon (family 6 model 106), RMSprop without the update clip. A wrong update is far beyond it: a
#: learning rate off by 0.1 % is 1e-3 (tests/test_kernels.py).
FUSED_UPDATE_TOLERANCE = 1e-4


def fused_update_verified(structure: Structure, permuted: bool = False) -> bool:
    """Whether the fused kernel is available and trains like the plain program here, within
    :data:`FUSED_UPDATE_TOLERANCE` (bit for bit where this machine's XLA emits the code the kernel mirrors).

    The kernel mirrors what XLA:CPU emits for the plain program on the CPU it was written for;
    elsewhere XLA contracts other multiply-adds and the two differ in float32 rounding. So the
    proof runs at the structure's own shapes: three steps of two members (batch 64, ReLU in place
    of the activation, which does not touch the fused loops) both ways, every parameter and
    optimizer state compared (`compare_states`; tests/test_kernels.py also checks one member, the
    real activations and real MNIST). Beyond the tolerance it returns False and the engine keeps
    the plain program (logged once per machine; afterwards at debug level); within it but not bit
    for bit, the kernel is used and that is logged once too: the job is deterministic on this
    machine and path (the same config and seed give the same bits), and `CL_SWEEP_CPU_KERNELS=0`
    gives the plain program's bits. Once per machine and (optimizer, clip, layer sizes): about two
    seconds, mostly the plain program's compilation; the outcome is stored beside the compiled
    kernels (`kernels.record_proof`).
    """
    if not kernels.available():
        return False
    if model_of(structure).fused.width % 8:  # the kernel's loop mirrors XLA's 8-wide vector loop only
        return False
    return _fused_update_verified(_stand_in(structure), permuted)


def _sparse_chosen(structure: Structure, permuted: bool) -> bool:
    """Where the fused kernel runs: whether the engine takes its sparse variant (`_programs`, `fast_paths`)."""
    return sparse_update_applies(structure) and sparse_update_verified(structure, permuted)


def _stand_in(structure: Structure) -> Structure:
    """The structure a kernel proof trains: ReLU for the activation, which does not touch the fused loops."""
    return dataclasses.replace(structure, activation="relu", activation_static=())


def sparse_update_verified(structure: Structure, permuted: bool = False) -> bool:
    """Whether the fused kernel's sparse variant (the weight gradient built from the non-zero entries of
    the pre-activations' gradient, `sparse_update_applies`) trains like the plain program here: the
    same proof and tolerance as `fused_update_verified`, ReLU standing in for the activation (the
    kernel is right for any gradient; sparsity only decides its speed). Its sums run over the
    examples in another order than the GEMM's, so where it is not bit for bit the plain program's it
    is used within :data:`FUSED_UPDATE_TOLERANCE`; deterministic either way."""
    if not fused_update_verified(structure, permuted):
        return False
    return _fused_update_verified(_stand_in(structure), permuted, True)


@functools.lru_cache(maxsize=None)
def _fused_update_verified(structure: Structure, permuted: bool, sparse: bool = False) -> bool:
    # The outcome is a property of this library, jaxlib, optax, XLA flags and shapes: stored once
    # per machine beside the library, it spares later processes the two compilations. The rule is
    # part of the key: an outcome proved under another rule (bit equality before) is proved again.
    key = (f"{structure!r} permuted={permuted} optax={optax.__version__} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')} "
           f"tolerance={FUSED_UPDATE_TOLERANCE:g}" + (" sparse" if sparse else ""))
    recorded = kernels.recorded_proof(key)
    first_time = recorded is None
    if first_time:
        recorded = _prove_fused_update(structure, permuted, sparse)
        kernels.record_proof(key, recorded)
    if isinstance(recorded, bool):  # a bare outcome (a test's stand-in): bit for bit, or not at all
        recorded = {"passed": recorded, "identical": recorded}
    model = model_of(structure)
    what = f"{structure.optimizer}, clip {model.update_clip}, {structure.input_size} -> {model.fused.width}"
    kernel = "the fused update kernel's sparse variant" if sparse else "the fused update kernel"
    if not recorded["passed"]:
        kernels.not_used(
            f"{what}: its results differ from the plain program's on this machine by "
            f"{recorded.get('max_rel_diff', float('nan')):.2g} of how far 3 steps moved the weights, beyond the tolerance "
            f"{FUSED_UPDATE_TOLERANCE:g}",
            what=f"{kernel} is",
            first_time=first_time,
        )
    elif not recorded["identical"]:
        kernels.log.log(
            logging.INFO if first_time else logging.DEBUG,
            f"cl_sweep: {kernel} ({what}) is used within tolerance: on this CPU it differs from "
            f"the plain XLA program in float32 rounding ({recorded.get('max_rel_diff', float('nan')):.2g} of how far "
            f"3 steps moved the weights; tolerance {FUSED_UPDATE_TOLERANCE:g}), so results are deterministic "
            f"here but not the plain program's bits ({kernels.ENV_SWITCH}=0 gives those). Said once on this machine.",
        )
    return bool(recorded["passed"])


def compare_states(plain: Sequence[np.ndarray], fused: Sequence[np.ndarray], start: Sequence[np.ndarray] | None = None,
                   tolerance: float = FUSED_UPDATE_TOLERANCE) -> dict[str, Any]:
    """The proof's verdict on two trained states (lists of arrays in the same order).

    ``identical``: every array equal bit for bit. ``max_rel_diff``: the largest |fused - plain| over
    every array, each divided by how far training moved that array (the largest |plain - start|;
    without ``start``, its largest magnitude): a wrong learning rate shows in full even where the
    weights are large beside one step. ``passed``: the shapes and dtypes agree, NaN/inf sit at the
    same places, non-float arrays and arrays training did not move are equal bit for bit, and
    ``max_rel_diff`` <= ``tolerance``.
    """
    identical, passed, worst = True, True, 0.0
    starts = [None] * len(plain) if start is None else start
    for a, b, a0 in zip(plain, fused, starts, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return {"identical": False, "passed": False, "max_rel_diff": math.inf, "tolerance": tolerance}
        if np.array_equal(a.view(np.uint8), b.view(np.uint8)):
            continue
        identical = False
        if a.dtype == bool or not np.issubdtype(a.dtype, np.floating):
            passed, worst = False, math.inf
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        finite = np.isfinite(a64)
        if not np.array_equal(finite, np.isfinite(b64)) or not np.array_equal(a64[~finite], b64[~finite], equal_nan=True):
            passed, worst = False, math.inf
            continue
        moved = a64 if a0 is None else a64 - np.asarray(a0, np.float64)
        scale = float(np.max(np.abs(moved[finite]))) if finite.any() else 0.0
        diff = float(np.max(np.abs(a64[finite] - b64[finite]))) if finite.any() else 0.0
        worst = max(worst, diff / scale if scale > 0 else (math.inf if diff > 0 else 0.0))
    return {"identical": identical, "passed": passed and worst <= tolerance, "max_rel_diff": worst, "tolerance": tolerance}


def _prove_fused_update(structure: Structure, permuted: bool, sparse: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n_in, batch = structure.input_size, 64
    images = jnp.asarray(rng.integers(0, 256, size=(4 * batch, n_in), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, structure.num_classes, size=4 * batch, dtype=np.int32))
    hp = {"adagrad": {"learning_rate": [0.01, 0.5], "initial_accumulator_value": [1e-6, 0.1]},
          "rmsprop": {"learning_rate": [0.001, 0.05], "decay": [0.9, 0.5]},
          "sgdm": {"learning_rate": [0.001, 0.05], "momentum": [0.9, 0.5]},
          "adam": {"learning_rate": [0.001, 0.05], "b1": [0.9, 0.5], "b2": [0.999, 0.9]}}[structure.optimizer]
    opt_hp = {k: jnp.asarray(v, jnp.float32) for k, v in hp.items()}
    batch_idx = jnp.asarray(rng.integers(0, 4 * batch, size=(2, 3, batch), dtype=np.int32))
    out, start = [], None
    for fused in (False, True):
        init, train_steps, _ = _build_programs(structure, permuted, fused, fused and sparse)
        state = init(jnp.stack([jax.random.PRNGKey(s) for s in (0, 1)]), opt_hp)
        if start is None:
            start = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state[:4])]
        state = train_steps(
            state, images, labels, batch_idx, jnp.ones((3, batch), jnp.float32), jnp.int32(0), jnp.int32(3), {},
            opt_hp, jnp.arange(n_in, dtype=jnp.int32),
        )
        out.append([np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state[:4])])  # not the loss sum
    return compare_states(*out, start=start)


def task_accuracies(correct: jax.Array, test_task_onehot: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Overall [P] and per-task [P, T] accuracy from [P, M] 0/1 correctness and the [M, T] task one-hot.

    The per-task accuracy is count x (1 / n), spelled out: XLA rewrites a division by a broadcast
    [T] vector into this product when P > 1 but keeps the division when P = 1, which moved per-task
    accuracies by one float32 ulp with the population size. As a product, every P gives the same bits.
    """
    per_task = (correct @ test_task_onehot) * (1.0 / jnp.sum(test_task_onehot, axis=0))
    return jnp.mean(correct, axis=-1), per_task


@functools.lru_cache(maxsize=64)
def _build_programs(structure: Structure, permuted: bool, fused: bool, sparse: bool = False):
    act = get_activation(structure.activation)
    static = dict(structure.activation_static)
    opt = get_optimizer(structure.optimizer)
    opt_static = dict(structure.optimizer_static)
    strat = strategies.get_strategy(structure.strategy)
    strat_static = dict(structure.strategy_static)
    probe = regulariser_of(structure)
    regularised = probe is not None
    model = model_of(structure)
    if model.trainer is not None or model.init is None or model.apply is None:
        raise ValueError(f"model {structure.model!r} is trained by its own rule (Model.trainer), not by the engine's programs")

    def activation_fn(act_hp):
        return lambda h: act.call(h, **act_hp, **static)

    def make_tx(opt_hp):
        tx = with_update_clip(opt.call(**opt_hp, **opt_static), model.update_clip)
        return optax.chain(optax.clip_by_global_norm(model.grad_clip_norm), tx) if model.grad_clip_norm else tx

    def member_init(key, opt_hp):
        params = model.init(key)
        return params, make_tx(opt_hp).init(params)

    def aux_init(n_members):
        """Per-member model state that is not trained (SDMLP's GABA activation counters)."""
        if model.aux_init is None:
            return {}
        return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n_members, *a.shape)), model.aux_init())

    def model_forward(params, x, act_hp, aux):
        """(logits, hidden activations) of preprocessed inputs."""
        return model.apply(params, x, activation_fn(act_hp), aux)

    def member_loss(params, x, y, mask, act_hp, aux, reg, s_hp):
        logits, h = model_forward(params, x, act_hp, aux)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        loss = jnp.sum(ce * mask) / jnp.sum(mask)
        if regularised:  # a Python branch: without a strategy the program is exactly the plain one
            loss = loss + strat.call(**s_hp, **strat_static).penalty(reg, params)
        return loss, h

    def member_step_fused(params, opt_state, x, y, mask, act_hp, opt_hp):
        """`member_step` with the first layer's weight-norm gradient, optimizer step and clip in one
        kernel pass (cl_sweep.training.kernels): the same operations, so the same numbers."""
        layer = model.fused.param
        v = params[layer]
        out1, grad_parts = ops.weight_norm_matmul_split(x, v)
        rest = {k: p for k, p in params.items() if k != layer}

        def head(out1, rest):
            ce = optax.softmax_cross_entropy_with_integer_labels(model.fused.head(out1, rest, activation_fn(act_hp)), y)
            return jnp.sum(ce * mask) / jnp.sum(mask)

        loss, (dout1, drest) = jax.value_and_grad(head, argnums=(0, 1))(out1, rest)
        # The optax chain updates the other parameters; its first-layer part gets a zero gradient
        # and its results are replaced below, so XLA drops that dead work.
        updates, new_state = make_tx(opt_hp).update({layer: jnp.zeros_like(v), **drest}, opt_state, params)
        params = optax.apply_updates(params, updates)
        g, colsum, beta = grad_parts(dout1, dense=not sparse)
        xc_d = {"xc": g[0], "d": g[1]} if sparse else {}  # the sparse variant builds G = x_c^T d itself
        v, acc = kernels.fused_update(  # Adam's bias corrections: at the count the chain just advanced
            structure.optimizer, None if sparse else g, v, kernels.param_state(opt_state, layer), beta,
            opt_hp["learning_rate"], kernels.kernel_hp(structure.optimizer, new_state, opt_hp, opt_static),
            model.update_clip, colsum=colsum, **xc_d,
        )
        return {**params, layer: v}, kernels.replace_param_state(new_state, layer, acc), loss

    def member_step(params, opt_state, aux, x, y, mask, act_hp, opt_hp, reg, s_hp):
        if fused and params[model.fused.param].shape[1] > x.shape[0]:  # the layout weight_norm_matmul_split handles
            params, opt_state, loss = member_step_fused(params, opt_state, x, y, mask, act_hp, opt_hp)
            return params, opt_state, aux, loss
        (loss, h), grads = jax.value_and_grad(member_loss, has_aux=True)(params, x, y, mask, act_hp, aux, reg, s_hp)
        updates, opt_state = make_tx(opt_hp).update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if model.project is not None:  # SDMLP's order: step, then project
            params = model.project(params)
        if model.aux_update is not None:  # the counters see this step's forward pass
            aux = model.aux_update(aux, h, mask)
        return params, opt_state, aux, loss

    population_step = jax.vmap(member_step, in_axes=(0, 0, 0, 0, 0, None, 0, 0, 0, 0))

    @jax.jit
    def init(keys, opt_hp):
        params, opt_state = jax.vmap(member_init)(keys, opt_hp)
        n = keys.shape[0]
        return params, opt_state, jnp.zeros(n, bool), aux_init(n), jnp.zeros(n, jnp.float32)

    def inputs(images_uint8, perm):
        x = model.preprocess(images_uint8)
        return jnp.take(x, perm, axis=-1) if permuted else x

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_steps(state, images, labels, batch_idx, batch_mask, start, stop, act_hp, opt_hp, perm, reg=None, s_hp=None):
        """Runs steps ``start..stop-1`` of a task's schedule for every member; the state's last
        part adds up each member's training loss (read and reset by the host at the task's end)."""
        reg = {} if reg is None else reg
        s_hp = {} if s_hp is None else s_hp

        def body(i, carry):
            params, opt_state, diverged, aux, loss_sum = carry
            idx = lax.dynamic_index_in_dim(batch_idx, i, axis=1, keepdims=False)  # [P, B]
            mask = lax.dynamic_index_in_dim(batch_mask, i, axis=0, keepdims=False)  # [B]
            x = inputs(images[idx], perm)
            y = labels[idx]
            params, opt_state, aux, loss = population_step(params, opt_state, aux, x, y, mask, act_hp, opt_hp, reg, s_hp)
            return params, opt_state, diverged | ~jnp.isfinite(loss), aux, loss_sum + loss

        return lax.fori_loop(start, stop, body, state)

    @jax.jit
    def evaluate(params, images, labels, test_task_onehot, act_hp, perm, aux=None):
        """Overall and per-task test accuracy, and the share of active hidden units: [P], [P, T], [P]."""
        x = inputs(images, perm)
        aux = {} if aux is None else aux

        def member_correct(args):
            p, hp, a = args
            logits, h = model_forward(p, x, hp, a)
            return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32), jnp.mean(h != 0)

        # lax.map, not vmap: one member's [M, hidden] activations at a time bounds memory.
        correct, active = lax.map(member_correct, (params, act_hp, aux))  # [P, M], [P]
        return (*task_accuracies(correct, test_task_onehot), active)

    @jax.jit
    def init_reg(params, s_hp):
        return jax.vmap(lambda p, shp: strat.call(**shp, **strat_static).init(p))(params, s_hp)

    @jax.jit
    def consolidate(params, reg, images, labels, sample_idx, act_hp, s_hp, perm, aux=None):
        """Each member's strategy state after a task, from the importance on its sample of that task."""
        aux = {} if aux is None else aux

        def member(p, r, idx, ahp, shp, a):
            xs, ys = inputs(images[idx], perm), labels[idx]

            def logits(q, x):
                return model_forward(q, x[None], ahp, a)[0][0]

            if probe.importance is None:  # a strategy that needs no importance estimate
                imp = None
            elif probe.importance == "fisher":
                imp = strategies.empirical_fisher(lambda q, x, y: jax.nn.log_softmax(logits(q, x))[y], p, xs, ys)
            elif probe.importance == "mas":
                imp = strategies.mas_importance(logits, p, xs)
            else:
                raise ValueError(f"strategy {strat.name!r}: importance={probe.importance!r}; allowed: 'fisher', 'mas', None")
            return strat.call(**shp, **strat_static).consolidate(r, p, imp)

        return jax.vmap(member)(params, reg, sample_idx, act_hp, s_hp, aux)

    if regularised:
        return init, train_steps, evaluate, (init_reg, consolidate)
    return init, train_steps, evaluate


def task_orders(
    split: TaskSplit, seeds: Sequence[int], batch_size: int, epochs_per_task: int, limit_per_task: int | None
) -> tuple[dict[tuple[int, int], np.ndarray], list[int], int]:
    """Each seed's example order per task, the steps of each task, and the padded schedule length.

    The padded length is shared by every task (rounded up to `STEP_BUCKET`), so all tasks, and
    other slices of similar size, run the same compiled program.
    """
    T = split.num_tasks
    orders = {
        (s, t): task_order(split.train_indices[t], s, t, epochs_per_task, limit_per_task)
        for s in dict.fromkeys(seeds)
        for t in range(T)
    }
    steps_per_task = [num_steps(len(orders[(seeds[0], t)]), batch_size) for t in range(T)]
    return orders, steps_per_task, STEP_BUCKET * math.ceil(max(steps_per_task) / STEP_BUCKET)


def task_batches(orders, seeds: Sequence[int], t: int, batch_size: int, padded: int) -> tuple[jax.Array, jax.Array]:
    """Task ``t``'s batches for a population: indices [P, S, B] (one row per member's seed) and the
    padding mask [S, B] (the same for every member)."""
    schedules = {s: batch_schedule(orders[(s, t)], batch_size, padded) for s in dict.fromkeys(seeds)}
    return jnp.asarray(np.stack([schedules[s][0] for s in seeds])), jnp.asarray(schedules[seeds[0]][1])


def train_population(
    structure: Structure,
    members: Sequence[Member],
    data: DeviceData,
    split: TaskSplit,
    *,
    batch_size: int = 64,
    epochs_per_task: int = 1,
    limit_per_task: int | None = None,
    progress: bool = True,
    desc: str = "",
    pad_to: int | None = None,
    compile_only: bool = False,
    on_task_end: Callable[[TaskEnd], None] | None = None,
    eval_every: int | None = None,
    on_eval: Callable[[EvalPoint], None] | None = None,
) -> PopulationResult | None:
    """Trains every member on the tasks in order, evaluating on the full test set after each task.

    ``pad_to`` (see `padded_population`) adds copies of the last member up to that population size
    so that the call reuses a compiled program; the result holds the real members only.
    ``compile_only`` compiles this call's programs (init, train, evaluate on the test set and on any
    held-out validation examples, the strategy's) with the exact shapes the training would use, runs
    no step, and returns None. ``on_task_end`` is called after each task's evaluation, ``on_eval``
    at each evaluation point of ``eval_every`` (see `run_tasks`).
    """
    start_time = time.perf_counter()
    n_real = len(members)
    if pad_to is not None and pad_to > n_real:
        members = list(members) + [members[-1]] * (pad_to - n_real)
    permuted = split.permutations is not None
    _COMPILED_SIZES.setdefault((structure, permuted), set()).add(len(members))
    init, train_steps, evaluate, *regulariser = _programs(structure, permuted)
    act = get_activation(structure.activation)
    opt = get_optimizer(structure.optimizer)
    strat = strategies.get_strategy(structure.strategy)
    act_hp = _hp_arrays(members, "activation_hp", act.traced)
    opt_hp = _hp_arrays(members, "optimizer_hp", opt.hyperparameters)
    s_hp = _hp_arrays(members, "strategy_hp", strat.traced)
    keys = jnp.stack([jax.random.PRNGKey(m.seed) for m in members])
    state = init(keys, opt_hp)
    reg = regulariser[0][0](state[0], s_hp) if regulariser else None

    T = split.num_tasks
    test_onehot = test_columns(split, np.asarray(data.test_labels))  # the shape run_tasks evaluates with
    if permuted:
        perms = [jnp.asarray(p) for p in split.permutations]
    else:
        perms = [jnp.arange(structure.input_size, dtype=jnp.int32)] * T
    seeds = [m.seed for m in members]
    orders, steps_per_task, padded = task_orders(split, seeds, batch_size, epochs_per_task, limit_per_task)

    def consolidate(t, state, reg, members=members, act_hp=act_hp, s_hp=s_hp):
        """The strategy's state after task t, from its importance on a sample of that task (each seed's first examples)."""
        n = min(dict(structure.strategy_static).get("samples", 256), len(orders[(members[0].seed, t)]))
        sample_idx = jnp.asarray(np.stack([orders[(m.seed, t)][:n] for m in members]))
        return regulariser[0][1](state[0], reg, data.train_images, data.train_labels, sample_idx, act_hp, s_hp, perms[t], state[3])

    if compile_only:  # zero steps of task 0 (traced loop bounds), one evaluation, one consolidation
        batch_idx, batch_mask = task_batches(orders, seeds, 0, batch_size, padded)
        state = train_steps(
            state, data.train_images, data.train_labels, batch_idx, batch_mask, jnp.int32(0), jnp.int32(0),
            act_hp, opt_hp, perms[0], reg, s_hp if regulariser else None,
        )
        out = [evaluate(state[0], data.test_images, data.test_labels, test_onehot, act_hp, perms[0], state[3])]
        if (validation := validation_sets(split)) is not None:  # the held-out examples' shape is a program of its own
            images, labels = examples_of(data, validation[0][0])
            out.append(evaluate(state[0], images, labels, validation[0][1], act_hp, perms[0], state[3]))
        if regulariser:
            out.append(consolidate(0, state, reg))
        jax.block_until_ready(out)
        return None

    class Program:  # the engine's side of the shared host task loop (`run_tasks`)
        def __init__(self):
            self.state, self.reg, self.members = state, reg, list(members)
            self.act_hp, self.opt_hp, self.s_hp = act_hp, opt_hp, s_hp

        def train(self, t, batch_idx, batch_mask, lo, hi):
            self.state = train_steps(
                self.state, data.train_images, data.train_labels, batch_idx, batch_mask,
                jnp.int32(lo), jnp.int32(hi), self.act_hp, self.opt_hp, perms[t], self.reg,
                self.s_hp if regulariser else None,
            )
            return np.asarray(self.state[2])  # the host sync that paces the bar

        def end_task(self, t):
            # A last update can make weights non-finite after the last loss was checked.
            params, opt_state, diverged, aux, loss_sum = self.state
            self.state = (params, opt_state, _diverged(params, diverged), aux, loss_sum)
            if regulariser:  # end of the task
                self.reg = consolidate(t, self.state, self.reg, self.members, self.act_hp, self.s_hp)
            return np.asarray(self.state[2])

        def train_loss_sum(self):
            """Each member's training loss summed over the steps since the last call (read at a task's end)."""
            *rest, loss_sum = self.state
            self.state = (*rest, jnp.zeros_like(loss_sum))
            return np.asarray(loss_sum)

        def evaluate(self, j, task_onehot, examples=None):
            images, labels = examples_of(data, examples)
            return evaluate(self.state[0], images, labels, task_onehot, self.act_hp, perms[j], self.state[3])

        def keep(self, rows):
            """Go on with the members at ``rows`` only: every array with a member axis is sliced.

            The smaller population is a new static shape, so its first task compiles the
            programs again (once per size and structure in a process); the steps of the members
            left out are saved from here on.
            """
            idx = jnp.asarray(np.asarray(rows, np.int32))
            take = functools.partial(jax.tree_util.tree_map, lambda x: x[idx])
            self.state, self.reg = take(self.state), (take(self.reg) if self.reg is not None else None)
            self.act_hp, self.opt_hp, self.s_hp = take(self.act_hp), take(self.opt_hp), take(self.s_hp)
            self.members = [self.members[r] for r in rows]
            _COMPILED_SIZES.setdefault((structure, permuted), set()).add(len(rows))

    program = Program()
    return run_tasks(program, split, seeds, orders=(orders, steps_per_task, padded), batch_size=batch_size,
                     progress=progress, desc=desc, n_real=n_real, start_time=start_time, on_task_end=on_task_end,
                     eval_every=eval_every, on_eval=on_eval, test_labels=np.asarray(data.test_labels))


def examples_of(data: DeviceData, examples: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """The images and labels a program evaluates on: the test set (``examples`` None), else the
    training examples at those indices (the held-out validation examples; a gather on the device)."""
    if examples is None:
        return data.test_images, data.test_labels
    return data.train_images[examples], data.train_labels[examples]


def validation_sets(split: TaskSplit) -> list[tuple[jax.Array, jax.Array]] | None:
    """Per task j, what `run_tasks` evaluates the held-out validation examples of task j's input
    with: (indices into the train set, their task one-hot). Class-incremental tasks share one set,
    every task's held-out examples with its id, so the overall validation accuracy covers all tasks,
    as the test accuracy does; a permuted task is its own held-out examples under its permutation.
    None when the split holds nothing out."""
    if not split.has_validation:
        return None
    if split.permutations is not None:
        return [(jnp.asarray(idx), jnp.ones((len(idx), 1), jnp.float32)) for idx in split.validation_indices]
    T = split.num_tasks
    idx = np.concatenate(split.validation_indices).astype(np.int32)
    task = np.concatenate([np.full(len(v), t) for t, v in enumerate(split.validation_indices)])
    one = (jnp.asarray(idx), jnp.asarray((task[:, None] == np.arange(T)[None, :]).astype(np.float32)))
    return [one] * T


def test_columns(split: TaskSplit, test_labels: np.ndarray | None = None) -> jax.Array:
    """The [M, T' + C] one-hot that `run_tasks` reduces test correctness with: a column per task
    (one for permuted tasks: every test example belongs to every task, under that task's
    permutation) and, given the test labels, a column per class, so the per-class accuracy comes
    out of the same pass (the task columns' sums of 0/1 are exact: the same bits either way)."""
    T = split.num_tasks
    tasks = (np.ones((len(split.test_task), 1)) if split.permutations is not None
             else split.test_task[:, None] == np.arange(T)[None, :])
    if test_labels is not None:
        labels = np.asarray(test_labels)
        tasks = np.concatenate([tasks, labels[:, None] == np.arange(int(labels.max()) + 1)[None, :]], axis=1)
    return jnp.asarray(tasks.astype(np.float32))


def run_tasks(
    program: Any,
    split: TaskSplit,
    seeds: Sequence[int],
    *,
    batch_size: int = 64,
    epochs_per_task: int = 1,
    limit_per_task: int | None = None,
    progress: bool = True,
    desc: str = "",
    n_real: int | None = None,
    start_time: float | None = None,
    orders: tuple | None = None,
    on_task_end: Callable[[TaskEnd], None] | None = None,
    eval_every: int | None = None,
    on_eval: Callable[[EvalPoint], None] | None = None,
    test_labels: np.ndarray | None = None,
) -> PopulationResult:
    """The host task loop every trainer shares: the tasks in order, each as `CHUNKS_PER_TASK`
    device calls under a progress bar, divergence reported when it happens, then the evaluation
    after the task (permuted tasks: task 1 and the newest, or every seen task with
    ``split.full_matrix``) and a progress line.

    ``program`` does the device work: ``train(t, batch_idx, batch_mask, lo, hi) -> diverged [P]``
    runs steps lo..hi-1 of task t; ``end_task(t) -> diverged [P]`` after its last step;
    ``evaluate(j, task_onehot, examples=None) -> (overall [P], per-task [P, T'], active fraction [P])``
    on the test set as task j sees it, or, given ``examples`` (indices into the train set), on
    those training examples: with a validation set (``split.validation_indices``) they are
    evaluated after every task beside the test set, the same way (no extra host sync: the
    results are read at the task boundary with the test accuracies); an optional ``divergence``
    attribute names what diverging means for it in the warning (default "non-finite loss").
    ``seeds[p]`` is member p's seed (its example order); the first ``n_real`` members are
    reported (the rest pad the population). ``on_task_end``, if given, receives a `TaskEnd` of the real
    members after each task's evaluation.

    ``on_task_end`` may return the indices (into ``seeds``) of real members to stop at this
    boundary (a pruner's verdict). A stopped member trains no further task: its rows after this
    task stay NaN and its ``tasks_trained`` is ``task + 1``. When every real member has stopped
    the loop ends; otherwise a program with a ``keep(rows)`` method (the engine's own) goes on
    with the other members only, so the stopped ones cost no more steps. A program without it
    (FlyModel's trainer) keeps computing them until its call ends, their numbers discarded.

    Besides the matrix: the test accuracies before the first step (``initial_accuracy``), each
    task's mean training loss from a program with a ``train_loss_sum()`` method (NaN without one),
    the final models' per-class accuracy given ``test_labels`` (the test labels, [M]), and with
    ``eval_every`` the `Curve`: every ``eval_every`` steps (counted over all tasks) the device calls
    split there and the members are evaluated as after a task (``on_eval`` hears each such
    `EvalPoint`). None of it changes a trained number: evaluations read the state only.
    """
    start_time = time.perf_counter() if start_time is None else start_time
    T, P = split.num_tasks, len(seeds)
    n_real = P if n_real is None else n_real
    permuted = split.permutations is not None
    test_onehot = test_columns(split, test_labels)
    n_task_columns = 1 if permuted else T
    if orders is None:
        orders = task_orders(split, seeds, batch_size, epochs_per_task, limit_per_task)
    orders, steps_per_task, padded = orders

    what = getattr(program, "divergence", "non-finite loss")  # how the program's divergence shows
    accuracy_matrix = np.full((P, T, T), np.nan, np.float64)
    overall = np.full((P, T), np.nan, np.float64)
    active_fraction = np.full((P, T), np.nan, np.float64)
    reported = np.zeros(P, bool)
    diverged = np.zeros(P, bool)
    tasks_trained = np.full(P, T, np.int64)
    stopped = np.zeros(P, bool)
    rows = np.arange(P)  # the members the program still trains, in its order
    validation = validation_sets(split)
    validation_matrix = np.full((P, T, T), np.nan, np.float64) if validation else None
    validation_overall = np.full((P, T), np.nan, np.float64) if validation else None
    train_loss = np.full((P, T), np.nan, np.float64)

    def test_row(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Overall [R], per-task [R, T] test accuracy, active fraction [R] and per-class accuracy
        [R, C] (C = 0 without ``test_labels``) of the members in training, evaluated as after task t
        (permuted: task 1 and task t, or every seen task; the classes and the active fraction on task t's inputs)."""
        if not permuted:
            acc, columns, active = program.evaluate(t, test_onehot)
            columns = np.asarray(columns)
            return np.asarray(acc), columns[:, :n_task_columns], np.asarray(active), columns[:, n_task_columns:]
        per_task = np.full((len(rows), T), np.nan, np.float64)
        for j in range(t + 1) if split.full_matrix else sorted({0, t}):
            acc, columns, active = program.evaluate(j, test_onehot)
            per_task[:, j] = np.asarray(acc)
        # mean over the evaluated tasks
        return np.nanmean(per_task[:, : t + 1], axis=1), per_task, np.asarray(active), np.asarray(columns)[:, 1:]

    # Before any step: the untrained models on every task the last row evaluates (forward transfer's baseline).
    initial = np.full((P, T), np.nan, np.float64)
    initial_overall, initial[rows], *_ = test_row(T - 1)
    classes = np.full((P, test_onehot.shape[1] - n_task_columns), np.nan, np.float64)  # after the last task
    curve: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (step, task, overall [P], per-task [P, T])

    def curve_point(step: int, t: int, acc: np.ndarray, per_task: np.ndarray) -> None:
        point_overall, point_per_task = np.full(P, np.nan), np.full((P, T), np.nan)
        point_overall[rows], point_per_task[rows] = acc, per_task
        point_overall[stopped], point_per_task[stopped] = np.nan, np.nan
        curve.append((step, t, point_overall, point_per_task))

    if eval_every:
        curve_point(0, 0, initial_overall, initial[rows])
    done = 0  # optimizer steps of the tasks before this one
    for t in range(T):
        batch_idx, batch_mask = task_batches(orders, [seeds[r] for r in rows], t, batch_size, padded)
        steps = steps_per_task[t]
        chunk = max(1, math.ceil(steps / CHUNKS_PER_TASK))
        bounds = set(range(chunk, steps, chunk))
        if eval_every:  # the device calls also end at every evaluation point
            bounds |= {k - done for k in range(eval_every * (done // eval_every + 1), done + steps, eval_every)}
        label = f"{desc}task {t + 1}/{T}".strip()
        with tqdm(total=steps, desc=label, unit="step", disable=not progress, leave=False, file=sys.stderr) as bar:
            lo = 0
            for hi in [*sorted(bounds), steps]:
                diverged[rows] = program.train(t, batch_idx, batch_mask, lo, hi)
                bar.update(hi - lo)
                for p in np.flatnonzero(diverged[:n_real] & ~reported[:n_real] & ~stopped[:n_real]):
                    tqdm.write(f"warning: member {p} (seed {seeds[p]}) diverged ({what}) in task {t + 1}", file=sys.stderr)
                reported |= diverged
                if eval_every and hi < steps and (done + hi) % eval_every == 0:
                    acc, per_task, *_ = test_row(t)
                    curve_point(done + hi, t, acc, per_task)
                    if on_eval is not None:
                        on_eval(EvalPoint(step=done + hi, task=t, num_tasks=T, seeds=tuple(int(s) for s in seeds[:n_real]),
                                          overall_accuracy=curve[-1][2][:n_real].copy(),
                                          per_task=curve[-1][3][:n_real].copy()))
                lo = hi
        done += steps
        diverged[rows] = program.end_task(t)
        if hasattr(program, "train_loss_sum"):
            train_loss[rows, t] = program.train_loss_sum() / max(steps, 1)
        acc, per_task, active, per_class = test_row(t)
        overall[rows, t], accuracy_matrix[rows, t, :], active_fraction[rows, t] = acc, per_task, active
        if t == T - 1:
            classes[rows] = per_class
        if permuted and validation:
            for j in range(t + 1) if split.full_matrix else sorted({0, t}):
                validation_matrix[rows, t, j] = np.asarray(program.evaluate(j, validation[j][1], validation[j][0])[0])
            validation_overall[rows, t] = np.nanmean(validation_matrix[rows, t, : t + 1], axis=1)
        elif validation:
            v_acc, v_per_task, _ = program.evaluate(t, validation[t][1], validation[t][0])
            validation_overall[rows, t] = np.asarray(v_acc)
            validation_matrix[rows, t, :] = np.asarray(v_per_task)
        # A member stopped earlier but still computed (a program without `keep`) reports nothing more.
        accuracy_matrix[stopped, t], overall[stopped, t], active_fraction[stopped, t] = np.nan, np.nan, np.nan
        train_loss[stopped, t] = np.nan
        if eval_every:
            curve_point(done, t, overall[rows, t], accuracy_matrix[rows, t])
        if validation:
            validation_matrix[stopped, t], validation_overall[stopped, t] = np.nan, np.nan
        live = ~stopped[:n_real]
        if progress and live.any():
            row = accuracy_matrix[:n_real][live, t, : t + 1]
            seen = [row[:, j].mean() for j in range(t + 1) if np.isfinite(row[:, j]).all()]
            tqdm.write(
                f"{label}: test accuracy {100 * overall[:n_real][live, t].mean():.1f}% "
                f"(tasks so far: {' '.join(f'{100 * a:.0f}' for a in seen)})",
                file=sys.stderr,
            )
        if on_task_end is None:
            continue
        stop = on_task_end(TaskEnd(
            task=t, num_tasks=T, seeds=tuple(int(s) for s in seeds[:n_real]),
            accuracy_matrix=accuracy_matrix[:n_real].copy(), overall_accuracy=overall[:n_real].copy(),
            active_fraction=active_fraction[:n_real].copy(), diverged=diverged[:n_real].copy(),
            steps=int(steps), elapsed_s=time.perf_counter() - start_time, stopped=stopped[:n_real].copy(),
            train_loss=train_loss[:n_real].copy(), global_step=done,
            validation_overall=None if validation is None else validation_overall[:n_real].copy(),
        ))
        new = [int(p) for p in sorted(set(stop or ())) if 0 <= p < n_real and not stopped[p]]
        if not new or t == T - 1:
            continue
        stopped[new] = True
        tasks_trained[new] = t + 1
        if stopped[:n_real].all():
            tqdm.write(f"{desc}every model of this call stopped after task {t + 1}/{T}".strip(), file=sys.stderr)
            break
        if hasattr(program, "keep"):
            kept = [i for i, r in enumerate(rows) if r < n_real and not stopped[r]]
            program.keep(kept)
            rows = rows[kept]

    classes[stopped] = np.nan
    return PopulationResult(
        accuracy_matrix[:n_real], overall[:n_real], diverged[:n_real].copy(),
        time.perf_counter() - start_time, active_fraction[:n_real], tasks_trained[:n_real].copy(),
        None if validation is None else validation_matrix[:n_real],
        None if validation is None else validation_overall[:n_real],
        initial_accuracy=initial[:n_real], class_accuracy=classes[:n_real] if test_labels is not None else None,
        train_loss=train_loss[:n_real],
        curve=Curve(
            np.asarray([c[0] for c in curve], np.int64), np.asarray([c[1] for c in curve], np.int64),
            np.stack([c[2] for c in curve], axis=1)[:n_real], np.stack([c[3] for c in curve], axis=1)[:n_real],
        ) if eval_every else None,
    )
