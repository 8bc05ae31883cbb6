"""Tests for cl_sweep.data.tasks: class-incremental splits, per-seed example orders, batch schedules."""

from __future__ import annotations

import numpy as np
import pytest

from cl_sweep.data.tasks import TaskSplit, batch_schedule, class_incremental_split, num_steps, task_order


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    # uneven class sizes, shuffled, as uint8 like the real Dataset
    train = rng.permutation(np.repeat(np.arange(10), np.arange(3, 13))).astype(np.uint8)
    test = rng.permutation(np.repeat(np.arange(10), 4)).astype(np.uint8)
    return train, test


# ---------------------------------------------------------------------------------------------
# class_incremental_split
# ---------------------------------------------------------------------------------------------


def test_split_mnist_tasks_are_consecutive_pairs(labels):
    train, test = labels
    split = class_incremental_split(train, test, 5, 2)
    assert isinstance(split, TaskSplit)
    assert split.num_tasks == 5
    assert split.task_classes == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


def test_every_train_index_lands_in_exactly_its_task(labels):
    train, test = labels
    split = class_incremental_split(train, test, 5, 2)
    everything = np.concatenate(split.train_indices)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(train)))  # a partition
    for t, idx in enumerate(split.train_indices):
        assert idx.dtype == np.int32
        assert np.all(np.diff(idx) > 0)  # ascending
        assert set(train[idx].tolist()) == set(split.task_classes[t])
        assert len(idx) == np.isin(train, split.task_classes[t]).sum()


def test_test_task_is_label_div_2(labels):
    train, test = labels
    split = class_incremental_split(train, test, 5, 2)
    assert split.test_task.dtype == np.int32
    np.testing.assert_array_equal(split.test_task, test.astype(np.int64) // 2)


def test_iid_is_one_task_of_all_classes(labels):
    train, test = labels
    split = class_incremental_split(train, test, 1, 10)
    assert split.num_tasks == 1
    assert split.task_classes == (tuple(range(10)),)
    np.testing.assert_array_equal(split.train_indices[0], np.arange(len(train)))
    np.testing.assert_array_equal(split.test_task, np.zeros(len(test)))


def test_other_class_counts_per_task(labels):
    train, test = labels
    split = class_incremental_split(train, test, 2, 5)
    assert split.task_classes == ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    np.testing.assert_array_equal(split.test_task, test // 5)


def test_fewer_tasks_than_classes_leaves_the_rest_out(labels):
    train, test = labels
    split = class_incremental_split(train, test, 4, 2)
    np.testing.assert_array_equal(split.test_task, np.where(test < 8, test.astype(np.int64) // 2, -1))
    in_tasks = np.concatenate(split.train_indices)
    assert not np.isin(train[in_tasks], [8, 9]).any()
    np.testing.assert_array_equal(np.sort(in_tasks), np.flatnonzero(train < 8))


@pytest.mark.parametrize("num_tasks,classes_per_task", [(6, 2), (3, 4), (1, 11), (11, 1)])
def test_too_many_tasks_raises(labels, num_tasks, classes_per_task):
    train, test = labels
    with pytest.raises(ValueError):
        class_incremental_split(train, test, num_tasks, classes_per_task)


# ---------------------------------------------------------------------------------------------
# task_order
# ---------------------------------------------------------------------------------------------

INDICES = np.arange(100, 160, dtype=np.int32) * 3  # a task's (ascending) train indices


def test_task_order_is_deterministic():
    np.testing.assert_array_equal(task_order(INDICES, 7, 2, 1, None), task_order(INDICES, 7, 2, 1, None))


def test_task_order_is_a_permutation_of_the_task():
    order = task_order(INDICES, 0, 0, 1, None)
    assert order.dtype == np.int32
    np.testing.assert_array_equal(np.sort(order), INDICES)
    assert not np.array_equal(order, INDICES)  # actually shuffled


def test_task_order_differs_between_seeds_and_tasks():
    orders = [task_order(INDICES, s, t, 1, None) for s in range(4) for t in range(3)]
    for i in range(len(orders)):
        for j in range(i):
            assert not np.array_equal(orders[i], orders[j])


@pytest.mark.parametrize("limit", [1, 10, 60, 1000])
def test_limit_takes_the_first_n_of_the_seeds_shuffle(limit):
    full = task_order(INDICES, 3, 1, 1, None)
    limited = task_order(INDICES, 3, 1, 1, limit)
    np.testing.assert_array_equal(limited, full[:limit])


def test_epochs_reshuffle_the_same_subset():
    first = task_order(INDICES, 5, 4, 1, 20)
    three = task_order(INDICES, 5, 4, 3, 20)
    assert len(three) == 60
    epochs = three.reshape(3, 20)
    np.testing.assert_array_equal(epochs[0], first)
    for e in (1, 2):
        np.testing.assert_array_equal(np.sort(epochs[e]), np.sort(first))  # same subset
        assert not np.array_equal(epochs[e], first)  # reshuffled
    assert not np.array_equal(epochs[1], epochs[2])


def test_epochs_without_limit_each_cover_the_task():
    two = task_order(INDICES, 9, 0, 2, None).reshape(2, -1)
    for e in range(2):
        np.testing.assert_array_equal(np.sort(two[e]), INDICES)
    np.testing.assert_array_equal(two[0], task_order(INDICES, 9, 0, 1, None))


# ---------------------------------------------------------------------------------------------
# num_steps, batch_schedule
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,b,expected", [(10, 3, 4), (9, 3, 3), (1, 64, 1), (64, 64, 1), (65, 64, 2), (0, 64, 0)])
def test_num_steps_keeps_last_partial_batch(n, b, expected):
    assert num_steps(n, b) == expected


def test_num_steps_property():
    for b in (1, 3, 64):
        for n in range(1, 200):
            s = num_steps(n, b)
            assert (s - 1) * b < n <= s * b


def test_batch_schedule_hand_example():
    order = np.arange(10, 20, dtype=np.int32)[::-1]
    idx, mask = batch_schedule(order, 4, 5)
    assert idx.shape == mask.shape == (5, 4)
    assert idx.dtype == np.int32 and mask.dtype == np.float32
    np.testing.assert_array_equal(idx.ravel()[:10], order)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(idx.ravel()[10:], 0)  # padding points at index 0


@pytest.mark.parametrize("n,b", [(1, 1), (7, 3), (64, 64), (100, 64), (1000, 64)])
def test_batch_schedule_mask_properties(n, b):
    order = np.random.default_rng(n).permutation(5000)[:n].astype(np.int32)
    steps = num_steps(n, b)
    padded = steps + 3
    idx, mask = batch_schedule(order, b, padded)
    assert mask.sum() == n
    np.testing.assert_array_equal(idx[mask == 1], order)  # row-major order preserved
    assert np.all(mask[steps:] == 0)  # padded steps are all-zero
    assert np.all(mask[: steps - 1] == 1)  # only the last real step may be partial
    assert mask[steps - 1].sum() == n - (steps - 1) * b


def test_batch_schedule_refuses_too_few_steps():
    with pytest.raises(ValueError):
        batch_schedule(np.arange(10, dtype=np.int32), 4, 2)
    idx, mask = batch_schedule(np.arange(8, dtype=np.int32), 4, 2)  # exactly fits
    assert mask.sum() == 8


def test_permuted_split_identity_first_fixed_by_seed_and_all_examples():
    from cl_sweep.data.tasks import permuted_split

    train = np.arange(50) % 10
    test = np.arange(20) % 10
    a = permuted_split(train, test, 4, seed=0)
    b = permuted_split(train, test, 4, seed=0)
    c = permuted_split(train, test, 4, seed=1)
    assert a.num_tasks == 4 and a.permutations.shape == (4, 784)
    np.testing.assert_array_equal(a.permutations[0], np.arange(784))  # task 1 = identity
    np.testing.assert_array_equal(a.permutations, b.permutations)  # fixed by seed
    assert not np.array_equal(a.permutations[1], c.permutations[1])
    assert all(sorted(p) == list(range(784)) for p in a.permutations)  # each a permutation
    assert len({tuple(p) for p in a.permutations}) == 4
    assert all(np.array_equal(ix, np.arange(50)) for ix in a.train_indices)  # every task, every example
    assert a.full_matrix is False
