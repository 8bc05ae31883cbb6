"""Task splits (class-incremental or i.i.d.), their held-out validation examples, and each seed's
deterministic batch schedule.

Everything here is NumPy on the host: it runs once per job and produces small index arrays; the
images themselves stay on the accelerator and batches are gathered there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

#: The fixed key of the held-out validation examples (`hold_out`): the same for every seed and run.
VALIDATION_KEY = 20_240_613


class TaskSplitError(ValueError):
    """A task split that cannot be made from this data set (its message is one readable paragraph)."""


@dataclass(frozen=True)
class TaskSplit:
    """Which train examples each task trains on, and which task each test example belongs to.

    For permuted tasks every task uses every example, seen through its own pixel permutation;
    each task is then evaluated on the whole test set under that permutation.
    """

    train_indices: tuple[np.ndarray, ...]  # per task: int32 indices into the train set, ascending
    test_task: np.ndarray  # [num_test] int32 task id of each test example, -1 if in no task
    task_classes: tuple[tuple[int, ...], ...]  # per task: its labels
    permutations: np.ndarray | None = None  # [num_tasks, 784] int32 pixel order per task, or None
    full_matrix: bool = True  # evaluate every task seen so far; else only the first and the newest
    # per task: int32 indices into the train set held out for validation, ascending; () when none
    validation_indices: tuple[np.ndarray, ...] = ()

    @property
    def num_tasks(self) -> int:
        return len(self.train_indices)

    @property
    def has_validation(self) -> bool:
        return bool(self.validation_indices)


def limit_test(split: TaskSplit, n: int | None) -> tuple[TaskSplit, np.ndarray | None]:
    """The first ``n`` test examples of each task, in the data set's order (``n = None``: all of them).

    For smoke runs and tests: evaluating the whole test set after every task is most of a tiny job's
    time. Returns the split whose ``test_task`` covers only the kept examples, and the kept indices
    into the test set (ascending; None when nothing is cut), which the caller gathers the test images
    and labels with. Permuted tasks share one test set, so it keeps the first ``n`` of it. The test
    examples in no task (task -1: classes a split leaves out) count in the overall accuracy, so they
    are one more group that keeps its first ``n``.
    """
    if n is None:
        return split, None
    task = np.asarray(split.test_task)
    if split.permutations is not None:
        keep = np.arange(min(n, len(task)))
    else:
        keep = np.sort(np.concatenate([np.flatnonzero(task == t)[:n] for t in range(-1, split.num_tasks)]))
    if len(keep) == len(task):
        return split, None
    return dataclasses.replace(split, test_task=task[keep].astype(np.int32)), keep.astype(np.int32)


def hold_out(split: TaskSplit, fraction: float) -> TaskSplit:
    """Removes ``fraction`` of each task's training examples from training and keeps them as its
    validation examples; ``fraction = 0`` returns ``split`` itself, unchanged.

    Which examples: every train example gets a fixed score, the i-th draw of a generator keyed by
    `VALIDATION_KEY` (never by a model's seed), and each task holds out its
    ``max(1, round(fraction * n))`` examples of lowest score. So the subset is the same for every
    seed, run and machine, and an example's score does not depend on the benchmark's other keys;
    tasks that train on the same examples (permuted MNIST) hold out the same ones, so a validation
    image is never trained on under any permutation.

    Raises:
        TaskSplitError: ``fraction`` is not in [0, 1), or it leaves a task without a training example.
    """
    if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0.0 <= fraction < 1.0):
        raise TaskSplitError(
            f"benchmark.validation_fraction={fraction!r} is not allowed; it must lie in [0, 1) (0: no validation "
            "set, the paper's protocol). Nothing was trained."
        )
    if fraction == 0:
        return split
    num_train = 1 + max((int(idx.max()) for idx in split.train_indices if len(idx)), default=-1)
    score = np.random.default_rng(VALIDATION_KEY).random(num_train)  # draw i is the same for any num_train
    train, validation = [], []
    for t, idx in enumerate(split.train_indices):
        n_val = max(1, round(fraction * len(idx)))
        if n_val >= len(idx):
            raise TaskSplitError(
                f"benchmark.validation_fraction={fraction!r} holds out {n_val} of task {t + 1}'s {len(idx)} training "
                "examples and leaves it none to train on; allowed: a fraction in [0, 1) that leaves every task at "
                "least one training example (a smaller one, or 0 for no validation set). Nothing was trained."
            )
        held = np.zeros(len(idx), bool)
        held[np.argsort(score[idx], kind="stable")[:n_val]] = True
        train.append(idx[~held])
        validation.append(idx[held])
    return dataclasses.replace(split, train_indices=tuple(train), validation_indices=tuple(validation))


def class_incremental_split(
    train_labels: np.ndarray, test_labels: np.ndarray, num_tasks: int, classes_per_task: int
) -> TaskSplit:
    """Task t holds labels ``t*classes_per_task ... (t+1)*classes_per_task - 1`` (Split-MNIST: {0,1}, {2,3}, ...).

    With one task of every class this is the ordinary i.i.d. benchmark.
    """
    num_labels = int(max(train_labels.max(), test_labels.max())) + 1
    if num_tasks * classes_per_task > num_labels:
        raise ValueError(
            f"benchmark asks for {num_tasks} tasks x {classes_per_task} classes, but the dataset has {num_labels} classes"
        )
    task_classes = tuple(tuple(range(t * classes_per_task, (t + 1) * classes_per_task)) for t in range(num_tasks))
    train_task = np.asarray(train_labels, np.int64) // classes_per_task
    test_task = np.asarray(test_labels, np.int64) // classes_per_task
    test_task = np.where(test_task < num_tasks, test_task, -1).astype(np.int32)
    indices = tuple(np.flatnonzero(train_task == t).astype(np.int32) for t in range(num_tasks))
    return TaskSplit(indices, test_task, task_classes)


def permuted_split(
    train_labels: np.ndarray, test_labels: np.ndarray, num_tasks: int, *, seed: int = 0,
    num_pixels: int = 784, full_matrix: bool = False,
) -> TaskSplit:
    """Permuted MNIST: task t shows every image through a fixed pixel permutation; task 1 is the identity.

    The permutations depend on ``seed`` only (not on the model's seed), so every model of a
    sweep sees the same task sequence. References: Kirkpatrick et al. 2017 (EWC), after
    Goodfellow et al. 2013.
    """
    rng = np.random.default_rng([seed, 784])
    perms = [np.arange(num_pixels)] + [rng.permutation(num_pixels) for _ in range(num_tasks - 1)]
    everything = np.arange(len(train_labels), dtype=np.int32)
    classes = tuple(range(int(max(train_labels.max(), test_labels.max())) + 1))
    return TaskSplit(
        train_indices=(everything,) * num_tasks,
        test_task=np.zeros(len(test_labels), np.int32),
        task_classes=(classes,) * num_tasks,
        permutations=np.stack(perms).astype(np.int32),
        full_matrix=full_matrix,
    )


def task_order(task_indices: np.ndarray, seed: int, task: int, epochs: int, limit: int | None) -> np.ndarray:
    """The seed's example order for one task: a fresh permutation per epoch, cut to ``limit`` examples.

    With ``limit`` set, each epoch uses the first ``limit`` examples of the seed's *first*
    shuffle (the same subset every epoch, reshuffled), so a smoke run trains on a fixed slice.
    """
    rng = np.random.default_rng([seed, task])
    first = rng.permutation(task_indices)
    subset = first if limit is None else first[:limit]
    orders = [subset] + [rng.permutation(subset) for _ in range(epochs - 1)]
    return np.concatenate(orders).astype(np.int32)


def num_steps(num_examples: int, batch_size: int) -> int:
    """Batches per task; the last partial batch is kept (as the reference does)."""
    return -(-num_examples // batch_size)


def batch_schedule(order: np.ndarray, batch_size: int, padded_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Cuts an example order into ``[padded_steps, batch_size]`` indices and a 0/1 mask.

    Padding slots (the tail of the last partial batch, and whole steps past the task's end) get
    index 0 and mask 0: they contribute nothing to the loss, and steps past the end are never run.
    """
    steps = num_steps(len(order), batch_size)
    if steps > padded_steps:
        raise ValueError(f"{steps} steps do not fit in {padded_steps} padded steps")
    idx = np.zeros(padded_steps * batch_size, np.int32)
    mask = np.zeros(padded_steps * batch_size, np.float32)
    idx[: len(order)] = order
    mask[: len(order)] = 1.0
    return idx.reshape(padded_steps, batch_size), mask.reshape(padded_steps, batch_size)
