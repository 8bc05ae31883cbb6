"""Your own benchmark: a data set and its task split, registered with ``cl_sweep.register_benchmark``
(cl_sweep.components.benchmarks); the built-in ones are registered the same way. Real MNIST, small slices."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

import cl_sweep
from cl_sweep.components.benchmarks import benchmark_of, class_incremental
from cl_sweep.config import ConfigError, validate
from cl_sweep.components.registry import BENCHMARKS
from cl_sweep.training.train import population_key, train_jobs

LOADS = []


@pytest.fixture(scope="module")
def first_classes():
    from cl_sweep.data.datasets import Dataset, load_dataset

    @cl_sweep.register_benchmark("mnist_first_t", checks={"classes": lambda v, cfg: None if 2 <= v <= 10 else "it must be in 2..10"})
    def mnist_first(*, classes: int = 4, num_tasks: int = 2) -> cl_sweep.Benchmark:
        """MNIST's first `classes` digits only, split into `num_tasks` tasks: a loader of one's own."""

        def load(data_dir, progress):
            LOADS.append(classes)
            ds = load_dataset("mnist", data_dir, progress=progress)
            tr, te = ds.train_labels < classes, ds.test_labels < classes
            return Dataset(f"mnist<{classes}", ds.train_images[tr], ds.train_labels[tr], ds.test_images[te],
                           ds.test_labels[te], classes)

        return cl_sweep.Benchmark(load, class_incremental(num_tasks, classes // num_tasks), name=f"mnist_first{classes}")

    yield "mnist_first_t"
    BENCHMARKS.unregister("mnist_first_t")


def test_every_benchmark_has_its_keys_and_the_schedule_keys(first_classes, compose):
    node = dict(compose([f"benchmark={first_classes}"]).benchmark)
    assert node == {"name": first_classes, "classes": 4, "num_tasks": 2, "batch_size": 64, "epochs_per_task": 1,
                    "limit_per_task": None, "test_limit_per_task": None}
    with pytest.raises(ConfigError, match=r"benchmark.clases=3.*Did you mean benchmark.classes"):
        validate(compose([f"benchmark={first_classes}", "benchmark.clases=3"]))
    with pytest.raises(ConfigError, match=r"benchmark.batch_size=0 is not allowed; it must be a positive integer"):
        validate(compose([f"benchmark={first_classes}", "benchmark.batch_size=0"]))  # the schedule's checks come along
    with pytest.raises(ConfigError, match=r"benchmark.classes=11 .*2..10"):
        validate(compose([f"benchmark={first_classes}", "benchmark.classes=11"]))
    with pytest.raises(ConfigError, match=r"benchmark.num_tasks=6 .*6 x 2 must be at most the data set's 10 classes"):
        validate(compose(["benchmark=split_mnist", "benchmark.num_tasks=6"]))


def test_the_builtin_benchmarks_are_registrations():
    builtin = {n: c.source for n, c in BENCHMARKS.items() if not n.endswith("_t")}
    assert builtin == dict.fromkeys(["split_mnist", "iid_mnist", "split_fashion_mnist", "permuted_mnist", "split_tfds"],
                                    "cl_sweep.components.benchmarks")  # the public API, nothing private
    assert {n: benchmark_of({"name": n, **BENCHMARKS[n].defaults}).dataset for n in
            ("split_mnist", "iid_mnist", "split_fashion_mnist", "permuted_mnist")} == {
        "split_mnist": "mnist", "iid_mnist": "mnist", "split_fashion_mnist": "fashion_mnist", "permuted_mnist": "mnist"}
    assert benchmark_of({"name": "split_tfds", **BENCHMARKS["split_tfds"].defaults, "tfds_name": "kmnist"}).name == "split_tfds:kmnist"


@pytest.mark.slow
def test_a_users_benchmark_trains_on_its_own_data_loaded_once(first_classes, compose):
    def cfg(*o):
        return OmegaConf.to_container(compose([f"benchmark={first_classes}", "activation=relu", "optimizer=sgd",
                                               "optimizer.learning_rate=0.05", "benchmark.limit_per_task=256",
                                               "n_seeds=2", "progress=false", *o]), resolve=True)

    jobs = [cfg(), cfg("optimizer.learning_rate=0.02")]
    assert population_key(jobs[0]) == population_key(jobs[1])  # one population: same data and tasks
    LOADS.clear()
    results = train_jobs(jobs, [[]] * 2)
    assert LOADS == [4]  # loaded once for the whole population
    r = results[0]
    assert r["status"] == "ok" and r["benchmark"] == "mnist_first4" and len(r["accuracy_matrix"][0]) == 2
    assert np.asarray(r["accuracy_matrix"])[:, 0, 0].min() > 0.9  # task 1 ({0, 1}) is learned
    train_jobs([cfg()], [[]])
    assert LOADS == [4]  # and kept on the device for the next job of the process
    assert population_key(cfg("benchmark.classes=6", "benchmark.num_tasks=3")) != population_key(jobs[0])
