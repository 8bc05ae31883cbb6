"""Benchmarks: a data set and its task split, each registered by name with
``cl_sweep.register_benchmark``; the keyword-only parameters are the config keys.

    @cl_sweep.register_benchmark("split_kmnist")
    def split_kmnist(*, num_tasks: int = 5, classes_per_task: int = 2):
        return cl_sweep.Benchmark(dataset=tfds_dataset_name("kmnist"), split=class_incremental(num_tasks, classes_per_task))

A `Benchmark`'s ``dataset`` is a name `cl_sweep.data.datasets.load_dataset` knows (``mnist``,
``fashion_mnist``, ``tfds:<builder>[@<folder>]``) or a function ``(data_dir, progress) ->
cl_sweep.data.datasets.Dataset`` for data of your own; ``split(dataset) -> cl_sweep.data.tasks.TaskSplit``
makes the tasks. Every benchmark also has the schedule keys ``batch_size`` (64),
``epochs_per_task`` (1), ``limit_per_task`` (null; smoke tests: the first N examples of each
task's shuffle) and ``test_limit_per_task`` (null; smoke tests: the first N test examples of each
task, `cl_sweep.data.tasks.limit_test`). Split-MNIST, Split-Fashion-MNIST and any TFDS data set are three registrations of
the same class-incremental split. The built-in benchmarks also take ``validation_fraction`` (0, the
paper's protocol: no validation set): that fraction of each task's training examples, a fixed
subset the same for every seed (`cl_sweep.data.tasks.hold_out`), is never trained on and gives the
job's validation accuracy, which honest model selection picks grid points by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from cl_sweep.components.registry import BENCHMARKS, Component, nonnegative, positive_int, register_benchmark
from cl_sweep.data.tasks import TaskSplit, class_incremental_split, hold_out, permuted_split

__all__ = ["Benchmark", "BENCHMARKS", "get_benchmark", "benchmark_of", "class_incremental", "permuted"]


@dataclass(frozen=True)
class Benchmark:
    """A data set and how it becomes tasks."""

    dataset: str | Callable[[Any, bool], Any]
    split: Callable[[Any], TaskSplit]
    # The result's `benchmark` when the option's name says too little (split_tfds:kmnist), so that
    # tables never pool two data sets.
    name: str | None = None


def get_benchmark(name: str) -> Component:
    """The registered benchmark; an unknown name raises ValueError listing the allowed ones."""
    return BENCHMARKS.lookup(name)


def benchmark_of(node: Mapping[str, Any]) -> Benchmark:
    """The `Benchmark` of a config's ``benchmark`` node."""
    component = get_benchmark(node["name"])
    return component.call(**{k: node[k] for k in component.keys})


def class_incremental(num_tasks: int, classes_per_task: int, validation_fraction: float = 0.0) -> Callable[[Any], TaskSplit]:
    """Task t holds labels ``t*classes_per_task ... (t+1)*classes_per_task - 1``, one shared head;
    ``validation_fraction`` of each task's training examples held out (`hold_out`)."""
    return lambda ds: hold_out(
        class_incremental_split(ds.train_labels, ds.test_labels, num_tasks, classes_per_task), validation_fraction
    )


def permuted(num_tasks: int, seed: int, full_matrix: bool, validation_fraction: float = 0.0) -> Callable[[Any], TaskSplit]:
    """Every task holds every class, seen through its own fixed pixel permutation (task 1 = identity);
    ``validation_fraction`` of the training examples held out, the same ones in every task (`hold_out`)."""
    return lambda ds: hold_out(
        permuted_split(ds.train_labels, ds.test_labels, num_tasks, seed=seed, full_matrix=full_matrix,
                       num_pixels=ds.train_images.shape[1]),
        validation_fraction,
    )


def _validation_fraction(v: Any, cfg: Mapping) -> str | None:
    """[0, 1); whether it leaves every task a training example is known once the data is loaded
    (`hold_out` refuses it then, before anything trains)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0:
        return None
    return "it must lie in [0, 1) (0: no validation set, the paper's protocol; 0.1: a tenth of each task's training examples)"


def _classes(total: int) -> Callable[[Any, Mapping], str | None]:
    """num_tasks x classes_per_task must fit the data set's classes."""

    def check(v: Any, cfg: Mapping) -> str | None:
        bench = cfg["benchmark"]
        if positive_int(v, cfg) is not None:
            return "it must be a positive integer"
        tasks, per_task = bench.get("num_tasks"), bench.get("classes_per_task")
        if isinstance(tasks, int) and isinstance(per_task, int) and tasks * per_task > total:
            return (f"benchmark.num_tasks x benchmark.classes_per_task = {tasks} x {per_task} must be at most the "
                    f"data set's {total} classes")
        return None

    return check


def _split_checks(total: int) -> dict:
    return {"num_tasks": _classes(total), "classes_per_task": _classes(total), "validation_fraction": _validation_fraction}


@register_benchmark("split_mnist", label="Split-MNIST", checks=_split_checks(10))
def split_mnist(*, num_tasks: int = 5, classes_per_task: int = 2, validation_fraction: float = 0.0) -> Benchmark:
    """Class-incremental Split-MNIST (the paper's): classes {0,1}, {2,3}, {4,5}, {6,7}, {8,9} in that order."""
    return Benchmark("mnist", class_incremental(num_tasks, classes_per_task, validation_fraction))


@register_benchmark("iid_mnist", label="i.i.d. MNIST", checks=_split_checks(10))
def iid_mnist(*, num_tasks: int = 1, classes_per_task: int = 10, validation_fraction: float = 0.0) -> Benchmark:
    """All ten classes at once (paper A.7): the i.i.d. baseline."""
    return Benchmark("mnist", class_incremental(num_tasks, classes_per_task, validation_fraction))


@register_benchmark("split_fashion_mnist", label="Split-Fashion-MNIST", checks=_split_checks(10))
def split_fashion_mnist(*, num_tasks: int = 5, classes_per_task: int = 2, validation_fraction: float = 0.0) -> Benchmark:
    """The same split on Fashion-MNIST: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat,
    5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot."""
    return Benchmark("fashion_mnist", class_incremental(num_tasks, classes_per_task, validation_fraction))


@register_benchmark("permuted_mnist", label="permuted MNIST",
                    checks={"num_tasks": lambda v, cfg: positive_int(v, cfg), "permutation_seed": nonnegative,
                            "validation_fraction": _validation_fraction})
def permuted_mnist(*, num_tasks: int = 100, classes_per_task: int = 10, permutation_seed: int = 0,
                   full_matrix: bool = False, validation_fraction: float = 0.0) -> Benchmark:
    """Permuted MNIST (paper A.10): ``num_tasks`` fixed pixel permutations, task 1 the identity, the
    same sequence for every model seed (``permutation_seed``). ``full_matrix: false`` evaluates
    only task 1 (stability) and the newest task (plasticity); true, every seen task.
    ``classes_per_task`` is fixed (every task has all ten classes). ``validation_fraction`` holds out
    the same training images in every task."""
    return Benchmark("mnist", permuted(num_tasks, permutation_seed, full_matrix, validation_fraction))


def _tfds_name(v: Any, cfg: Mapping) -> str | None:
    """benchmark=split_tfds: the TFDS data set exists here, is image classification, can be read or
    prepared, and has enough classes for the task split (raises the project's ConfigError itself
    when TFDS cannot be used at all)."""
    from cl_sweep.config import validate_tfds

    return validate_tfds(cfg["benchmark"])


@register_benchmark("split_tfds", label="Split-TFDS",
                    checks={"tfds_name": _tfds_name, "num_tasks": lambda v, cfg: positive_int(v, cfg),
                            "classes_per_task": lambda v, cfg: positive_int(v, cfg),
                            "validation_fraction": _validation_fraction})
def split_tfds(*, tfds_name: Optional[str] = None, tfds_data_dir: Optional[str] = None, num_tasks: int = 5,
               classes_per_task: int = 2, validation_fraction: float = 0.0) -> Benchmark:
    """python -m cl_sweep benchmark=split_tfds benchmark.tfds_name=kmnist benchmark.num_tasks=5 benchmark.classes_per_task=2

    Any TFDS image-classification data set, class-incremental: ``tfds_name`` (required: a
    tfds.builder name, e.g. kmnist, fashion_mnist, emnist/letters, cifar10) read from
    ``tfds_data_dir`` (null: TFDS's default, $TFDS_DATA_DIR, else ~/tensorflow_datasets). Task t
    holds the labels t*classes_per_task .. (t+1)*classes_per_task - 1 (labels past
    num_tasks*classes_per_task are not used). Loaded through tensorflow-datasets
    (cl_sweep.data.tfds.load_tfds): a copy prepared in the array_record format is read without
    TensorFlow; a data set not prepared yet is prepared by TFDS (download + conversion), which
    needs TensorFlow and the network. Images are flattened (H*W*C inputs) and normalised with
    MNIST's mean/std like every benchmark (cl_sweep.models.base.standard_preprocess)."""
    from cl_sweep.data.tfds import tfds_dataset_name

    return Benchmark(tfds_dataset_name(tfds_name, tfds_data_dir), class_incremental(num_tasks, classes_per_task, validation_fraction),
                     name=f"split_tfds:{tfds_name}")
