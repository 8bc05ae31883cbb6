"""Tests for cl_sweep.training.engine on a tiny, easy fake data set: shapes, learning, determinism, population = separate runs, divergence.

The fake data set has 10 classes; class c lights up its own block of pixels, so every task is
learnable in one epoch. Tests share compiled programs (one per structure and population size)
to stay fast.
"""

from __future__ import annotations

import numpy as np
import pytest

from cl_sweep.training import engine
from cl_sweep.data.datasets import Dataset
from cl_sweep.training.engine import Member, Structure, train_population
from cl_sweep.data.tasks import class_incremental_split
from conftest import TEST_SLICE

NUM_CLASSES = 10
TRAIN_PER_CLASS = 40
# uneven on purpose, so overall accuracy is a *weighted* mean of per-task accuracies
TEST_PER_CLASS = (20, 12, 28, 16, 24, 20, 14, 26, 18, 22)
BLOCK = 784 // NUM_CLASSES
BATCH = 16
HARD_ASH = {"alpha": 3.0, "z_k": 2.3, "beta": 2.0}


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dim noise everywhere, class c's block of pixels bright."""
    images = rng.integers(0, 40, size=(len(labels), 784), dtype=np.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, c * BLOCK : (c + 1) * BLOCK] = rng.integers(200, 256, size=BLOCK, dtype=np.uint8)
    return images


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    rng = np.random.default_rng(0)
    train_labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), TRAIN_PER_CLASS)).astype(np.uint8)
    test_labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), TEST_PER_CLASS)).astype(np.uint8)
    train_images, test_images = _images(train_labels, rng), _images(test_labels, rng)
    return Dataset("fake", train_images, train_labels, test_images, test_labels, NUM_CLASSES)


@pytest.fixture(scope="module")
def data(dataset) -> engine.DeviceData:
    return engine.to_device(dataset)


@pytest.fixture(scope="module")
def split(dataset):
    return class_incremental_split(dataset.train_labels, dataset.test_labels, 5, 2)


def _run(structure, members, data, split, **kw):
    return train_population(structure, members, data, split, batch_size=BATCH, progress=False, **kw)


# Hard ASH + Adagrad at the protocol's defaults except a larger learning rate (the fake data
# set gives only 5 steps per task) and no update clip (so the same compiled program also serves
# the divergence test); hidden 256 so the ~10% of units Hard ASH lets through reliably
# separate the classes (with 128, some seeds miss a class). The LWTA and Top-K structures
# below keep the protocol's update clip of 0.01.
BASE = Structure("hard_ash", "adagrad", model_static=dict(hidden_size=256, update_clip=None))


def _adagrad(seed: int, lr: float = 1e-2) -> Member:
    return Member(seed, HARD_ASH, {"learning_rate": lr, "initial_accumulator_value": 1e-6})


@pytest.fixture(scope="module")
def base(data, split):
    return _run(BASE, [_adagrad(0), _adagrad(1)], data, split)


def test_to_device_keeps_dtypes(data, dataset):
    assert data.train_images.dtype == np.uint8 and data.test_images.dtype == np.uint8
    assert data.train_labels.dtype == np.int32 and data.test_labels.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(data.test_labels), dataset.test_labels)


def test_result_shapes_and_ranges(base):
    assert base.accuracy_matrix.shape == (2, 5, 5)
    assert base.overall_accuracy.shape == (2, 5)
    assert base.diverged.shape == (2,) and base.diverged.dtype == bool
    assert not base.diverged.any()
    for a in (base.accuracy_matrix, base.overall_accuracy):
        assert np.all((a >= 0) & (a <= 1))
    np.testing.assert_array_equal(base.final_accuracy, base.overall_accuracy[:, -1])
    assert base.wall_time_s > 0


def test_accuracies_are_multiples_of_one_test_example(base, split):
    counts = np.bincount(split.test_task, minlength=5)
    for j in range(5):
        k = base.accuracy_matrix[:, :, j] * counts[j]
        np.testing.assert_allclose(k, np.round(k), atol=1e-4)


def test_each_task_is_learned_when_trained(base):
    # R[i, i]: accuracy on task i right after training it
    diagonal = np.diagonal(base.accuracy_matrix, axis1=1, axis2=2)
    assert np.all(diagonal > 0.8), diagonal


def test_overall_is_test_count_weighted_mean_of_tasks(base, split):
    assert np.all(split.test_task >= 0)  # every test example belongs to a task
    counts = np.bincount(split.test_task, minlength=5).astype(np.float64)
    assert len(set(counts)) > 1  # weights really differ
    expected = base.accuracy_matrix @ counts / counts.sum()
    np.testing.assert_allclose(base.overall_accuracy, expected, rtol=1e-5)


def test_same_members_twice_is_bitwise_identical(base, data, split):
    again = _run(BASE, [_adagrad(0), _adagrad(1)], data, split)
    np.testing.assert_array_equal(again.accuracy_matrix, base.accuracy_matrix)
    np.testing.assert_array_equal(again.overall_accuracy, base.overall_accuracy)
    np.testing.assert_array_equal(again.diverged, base.diverged)


@pytest.fixture(scope="module")
def alone(data, split):
    """Single-member runs, keyed by (seed, learning rate)."""
    return {(s, lr): _run(BASE, [_adagrad(s, lr)], data, split) for s, lr in ((0, 1e-2), (1, 1e-2), (0, 3e-2))}


def _assert_member_equals(population, p, single):
    # bit for bit: a grid point's result.json must not depend on the population it trained in
    np.testing.assert_array_equal(population.accuracy_matrix[p], single.accuracy_matrix[0])
    np.testing.assert_array_equal(population.overall_accuracy[p], single.overall_accuracy[0])
    assert population.diverged[p] == single.diverged[0]


def test_population_of_seeds_equals_members_alone(base, alone):
    _assert_member_equals(base, 0, alone[(0, 1e-2)])
    _assert_member_equals(base, 1, alone[(1, 1e-2)])
    # and the seeds really are different models
    assert not np.array_equal(base.accuracy_matrix[0], base.accuracy_matrix[1])


def test_per_member_learning_rates_equal_separate_runs(data, split, alone):
    population = _run(BASE, [_adagrad(0, 1e-2), _adagrad(0, 3e-2)], data, split)
    _assert_member_equals(population, 0, alone[(0, 1e-2)])
    _assert_member_equals(population, 1, alone[(0, 3e-2)])
    assert not np.array_equal(population.accuracy_matrix[0], population.accuracy_matrix[1])


def test_order_of_members_does_not_matter(base, data, split):
    swapped = _run(BASE, [_adagrad(1), _adagrad(0)], data, split)
    np.testing.assert_array_equal(swapped.accuracy_matrix[::-1], base.accuracy_matrix)


def test_diverged_member_is_reported_and_isolated(data, split, alone, capsys):
    # No update clip and a learning rate of 1e30: the weights overflow and the loss becomes NaN.
    huge = _adagrad(0, 1e30)
    mixed = _run(BASE, [huge, _adagrad(1)], data, split)
    assert mixed.diverged.tolist() == [True, False]
    assert "diverged" in capsys.readouterr().err
    # the healthy member is unaffected by its neighbour's NaNs
    _assert_member_equals(mixed, 1, alone[(1, 1e-2)])
    assert np.all(np.isfinite(mixed.accuracy_matrix[1]))


def _slice(result, p):
    return engine.PopulationResult(
        result.accuracy_matrix[p : p + 1], result.overall_accuracy[p : p + 1], result.diverged[p : p + 1], 0.0
    )


def test_lwta_static_groups_runs(data, split):
    structure = Structure("lwta", "adagrad", activation_static=(("groups", 8),), model_static=dict(hidden_size=32))
    member = Member(0, {}, {"learning_rate": 1e-2, "initial_accumulator_value": 1e-6})
    result = _run(structure, [member, member], data, split)
    assert result.accuracy_matrix.shape == (2, 5, 5)
    assert not result.diverged.any()
    np.testing.assert_array_equal(result.accuracy_matrix[0], result.accuracy_matrix[1])
    assert np.all(np.diagonal(result.accuracy_matrix[0]) > 0.5)


def test_topk_with_per_member_k(data, split):
    structure = Structure("topk_subtract", "adagrad", model_static=dict(hidden_size=32))

    def member(k):
        return Member(0, {"k": k}, {"learning_rate": 1e-2, "initial_accumulator_value": 1e-6})

    mixed = _run(structure, [member(4), member(16)], data, split)
    assert mixed.accuracy_matrix.shape == (2, 5, 5)
    assert not mixed.diverged.any()
    # each member trains with its own k: equal to a population where everyone has that k
    uniform = {k: _run(structure, [member(k), member(k)], data, split) for k in (4, 16)}
    for p, k in enumerate((4, 16)):
        _assert_member_equals(mixed, p, _slice(uniform[k], 0))
    assert not np.array_equal(uniform[4].accuracy_matrix[0], uniform[16].accuracy_matrix[0])


# --- permuted tasks and measured sparsity ---------------------------------------------------


def test_permuted_tasks_evaluate_first_and_newest_only_unless_full(data, dataset):
    from cl_sweep.data.tasks import permuted_split

    members = [_adagrad(0), _adagrad(1)]
    sparse = permuted_split(dataset.train_labels, dataset.test_labels, 3, seed=0)
    res = _run(BASE, members, data, sparse)
    m = res.accuracy_matrix
    assert m.shape == (2, 3, 3)
    evaluated = ~np.isnan(m[0])
    expected = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1]], bool)  # column 0 (stability) and the diagonal (plasticity)
    np.testing.assert_array_equal(evaluated, expected)
    assert (m[:, 0, 0] > 0.8).all()  # task 1 is the identity: learnable like the plain data
    full = _run(BASE, members, data, permuted_split(dataset.train_labels, dataset.test_labels, 3, seed=0, full_matrix=True))
    assert not np.isnan(full.accuracy_matrix[:, np.tril_indices(3)[0], np.tril_indices(3)[1]]).any()  # every seen task
    # same program, same data: the entries both runs evaluated agree exactly
    np.testing.assert_array_equal(full.accuracy_matrix[:, expected], m[:, expected])


def test_active_fraction_measures_sparsity(data, split):
    hard = _run(BASE, [_adagrad(0)], data, split)
    relu = _run(Structure("relu", "adagrad", model_static=dict(hidden_size=256, update_clip=None)), [Member(0, {}, {"learning_rate": 1e-2, "initial_accumulator_value": 1e-6})], data, split)
    assert hard.active_fraction.shape == (1, 5)
    assert ((0 <= hard.active_fraction) & (hard.active_fraction <= 1)).all()
    # Hard ASH with z_k = 2.3 keeps only the units above mean + 2.3 std: far sparser than ReLU
    assert hard.active_fraction.max() < 0.3 < relu.active_fraction.min()


# --- continual-learning strategies inside the population ------------------------------------


def test_ewc_with_zero_strength_is_the_plain_run(data, split, base):
    ewc = Structure("hard_ash", "adagrad", strategy="ewc", strategy_static=(("samples", 32),), model_static=dict(hidden_size=256, update_clip=None))
    members = [
        Member(0, HARD_ASH, {"learning_rate": 1e-2, "initial_accumulator_value": 1e-6}, {"lambda": 0.0}),
        Member(0, HARD_ASH, {"learning_rate": 1e-2, "initial_accumulator_value": 1e-6}, {"lambda": 1e4}),
    ]
    res = _run(ewc, members, data, split)
    # lambda is traced: both strengths share one program; lambda = 0 adds exactly nothing
    np.testing.assert_allclose(res.accuracy_matrix[0], base.accuracy_matrix[0], atol=1e-6)
    assert not res.diverged.any()  # (the fake tasks do not interfere, so the effect of lambda is tested on real data)


@pytest.mark.parametrize("name", ["online_ewc", "mas"])
def test_other_strategies_run_in_the_population(data, split, name):
    structure = Structure("relu", "sgd", strategy=name, strategy_static=(("samples", 16),), model_static=dict(hidden_size=64, update_clip=None))
    members = [Member(s, {}, {"learning_rate": 0.05}, {"lambda": 10.0, "gamma": 0.9}) for s in (0, 1)]
    res = _run(structure, members, data, split)
    assert res.accuracy_matrix.shape == (2, 5, 5) and not res.diverged.any()


def test_input_and_output_sizes_follow_the_data_set():
    """A data set of 12×12×3 images and 20 classes (as a TFDS data set may have): the model is
    built 432 → hidden → 20 and learns every task."""
    rng = np.random.default_rng(1)
    classes, size = 20, 12 * 12 * 3
    block = size // classes

    def images(labels):
        x = rng.integers(0, 40, size=(len(labels), size), dtype=np.uint8)
        for i, c in enumerate(labels.tolist()):
            x[i, c * block : (c + 1) * block] = 230
        return x

    train_labels = rng.permutation(np.repeat(np.arange(classes), 24)).astype(np.uint8)
    test_labels = np.repeat(np.arange(classes), 5).astype(np.uint8)
    ds = Dataset("fake20", images(train_labels), train_labels, images(test_labels), test_labels, classes)
    split = class_incremental_split(ds.train_labels, ds.test_labels, 4, 5)
    structure = Structure("hard_ash", "adagrad", input_size=size, num_classes=classes, model_static=dict(hidden_size=256, update_clip=None))
    res = _run(structure, [_adagrad(0)], engine.to_device(ds), split)
    assert res.accuracy_matrix.shape == (1, 4, 4)
    init = engine._programs(structure)[0]
    params = init(np.asarray([[0, 0]], np.uint32), {"learning_rate": np.ones(1, np.float32), "initial_accumulator_value": np.ones(1, np.float32)})[0]
    assert params["w1"].shape == (1, size, 256) and params["w2"].shape == (1, 256, classes)
    # each task is learned while it is the newest (diagonal of the accuracy matrix)
    assert np.all(np.diagonal(res.accuracy_matrix[0]) > 0.5)


def test_padding_members_changes_nothing_for_the_real_ones(base, data, split, capsys):
    # An accelerator pads a call's population to a power of two (engine.padded_population) so
    # that a sweep's calls share compiled programs; the padding copies must not leak into results.
    padded = _run(BASE, [_adagrad(0), _adagrad(1)], data, split, pad_to=4)
    assert padded.accuracy_matrix.shape == base.accuracy_matrix.shape
    assert padded.overall_accuracy.shape == base.overall_accuracy.shape == (2, 5)
    assert padded.diverged.shape == (2,) and padded.active_fraction.shape == (2, 5)
    _assert_member_equals(padded, 0, _slice(base, 0))
    _assert_member_equals(padded, 1, _slice(base, 1))
    # a diverged last member is padded with copies of itself but reported once
    mixed = _run(BASE, [_adagrad(1), _adagrad(0, 1e30)], data, split, pad_to=4)
    assert mixed.diverged.tolist() == [False, True]
    assert capsys.readouterr().err.count("diverged") == 1


def test_padded_population_rounds_up_to_a_power_of_two_on_accelerators(monkeypatch):
    monkeypatch.setattr(engine.jax, "default_backend", lambda: "gpu")
    assert [engine.padded_population(n, 256) for n in (1, 2, 3, 5, 64, 65, 200, 256)] == [1, 2, 4, 8, 64, 128, 256, 256]
    assert engine.padded_population(300, 256) == 300  # never below n (the caller caps n)
    assert engine.padded_population(70, 100) == 100  # the cap bounds the rounding
    assert engine.padded_population(6, 256, expect=9) == 16  # the later, larger phase fits the same program
    assert engine.padded_population(6, 256, expect=3) == 8
    # a size already compiled for the structure is reused rather than compiling a new one
    monkeypatch.setitem(engine._COMPILED_SIZES, (BASE, False), {64, 256})
    assert [engine.padded_population(n, 256, BASE) for n in (3, 64, 65, 256)] == [64, 64, 256, 256]
    assert engine.padded_population(3, 256, BASE, permuted=True) == 4  # another program
    monkeypatch.setattr(engine.jax, "default_backend", lambda: "cpu")
    assert [engine.padded_population(n, 256) for n in (1, 3, 5)] == [1, 3, 5]  # padding costs a real model on CPU


# --- on real MNIST: the training loss, and evaluations that change no trained number ---------------
# 3 steps of 64 per task, one seed: both tests below run the same compiled programs.
REAL_SLICE = ["benchmark.limit_per_task=192", TEST_SLICE, "n_seeds=1", "progress=false"]


@pytest.mark.slow
def test_eval_every_changes_no_trained_number(compose):
    """Evaluating every 2 steps splits the tasks' device calls there: the same numbers, plus the curve."""
    from cl_sweep.training.train import train_and_evaluate

    plain = train_and_evaluate(compose(REAL_SLICE))
    curved = train_and_evaluate(compose([*REAL_SLICE, "eval_every=2"]))
    for key in ("accuracy_matrix", "final_accuracy", "active_fraction", "train_loss", "initial_accuracy", "class_accuracy",
                "forward_transfer", "learning_accuracy"):
        assert plain[key] == curved[key], key
    assert "curve" not in plain
    assert curved["curve"][0]["step"] == [0, 2, 3, 4, 6, 8, 9, 10, 12, 14, 15]


def test_training_loss_is_the_mean_loss_over_the_task_steps(compose):
    """With a zero learning rate the weights never move, so each task's reported training loss is the
    initial model's mean cross-entropy over that task's batches, computed here on the host."""
    from cl_sweep.components.activations import get_activation
    from cl_sweep.training.train import _population_setup

    data, split, structure = _population_setup(compose(REAL_SLICE), progress=False)
    members = [Member(3, HARD_ASH, {"learning_rate": 0.0, "initial_accumulator_value": 1e-6})]
    res = train_population(structure, members, data, split, limit_per_task=192, progress=False)
    model = engine.model_of(structure)
    opt_hp = engine._hp_arrays(members, "optimizer_hp", ["learning_rate", "initial_accumulator_value"])
    params = {k: v[0] for k, v in engine._programs(structure)[0](np.asarray([engine.jax.random.PRNGKey(3)]), opt_hp)[0].items()}
    act = get_activation("hard_ash")
    orders, steps, _ = engine.task_orders(split, [3], 64, 1, 192)
    for t in range(5):
        losses = []
        for step in range(steps[t]):
            idx = orders[(3, t)][step * 64 : (step + 1) * 64]
            logits, _ = model.apply(params, model.preprocess(data.train_images[idx]), lambda h: act.call(h, **HARD_ASH), {})
            logp = np.asarray(engine.jax.nn.log_softmax(logits))
            losses.append(-np.mean(np.take_along_axis(logp, np.asarray(data.train_labels[idx])[:, None], 1)))
        assert steps[t] == 3 and res.train_loss[0, t] == pytest.approx(np.mean(losses), rel=1e-5)
