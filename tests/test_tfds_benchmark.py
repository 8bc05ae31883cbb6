"""benchmark=split_tfds: a TensorFlow Datasets image-classification data set as a class-incremental benchmark.

The success path runs on real data and without TensorFlow: real MNIST (a slice of the verified
IDX files in the project cache) is written by TFDS's own writer (a GeneratorBasedBuilder, in the
array_record format, the one TFDS reads without TensorFlow) into a temporary TFDS folder, and
``load_dataset("tfds:<name>@<folder>")`` must give back exactly those images and labels. Every
failure (package missing, TensorFlow missing to prepare, unknown name, no network, not image
classification, no test split, too many classes, a task split the data set cannot hold) must be
one paragraph that names the bad value.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds
from omegaconf import OmegaConf

from cl_sweep.data import datasets as data
from cl_sweep.data import tfds as tfds_loader
from cl_sweep.config import ConfigError, validate
from cl_sweep.data.datasets import load_dataset
from cl_sweep.data.tfds import TFDSUnavailableError, parse_tfds_dataset, tfds_dataset_name
from cl_sweep.data.tasks import class_incremental_split

from conftest import run_cli

N_TRAIN, N_TEST = 1200, 400  # the first examples of MNIST's train and test IDX files
SLICE = "cl_sweep_mnist_slice"


@pytest.fixture(autouse=True)
def _fresh_memo():
    data.clear_memory_cache()
    yield
    data.clear_memory_cache()


@pytest.fixture(scope="module")
def mnist() -> data.Dataset:
    """Real MNIST from the project cache (fetched and SHA-256-checked on first use)."""
    return load_dataset("mnist", progress=False)


def write_tfds(
    data_dir: Path, name: str, splits: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int = 10,
    file_format: str = "array_record",
) -> Path:
    """Stores 28x28 uint8 images and labels as TFDS data set ``name`` (array_record) with TFDS's writer.

    A GeneratorBasedBuilder, as a TFDS data set's own code is, but not registered in TFDS:
    the loader must find the data set from its files, as a fresh process would.
    """

    builder_name = name

    class RealMnistSlice(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = builder_name
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="Real MNIST (a slice of the original IDX files), written by cl_sweep's tests.",
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(28, 28, 1)),
                        "label": tfds.features.ClassLabel(num_classes=num_classes),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(x, y) for split, (x, y) in splits.items()}

        def _generate_examples(self, images, labels):
            # PIL encodes the PNGs (TFDS would ask TensorFlow for a NumPy array); PNG is lossless.
            for i, (image, label) in enumerate(zip(images, labels)):
                yield i, {"image": PIL.Image.fromarray(image.reshape(28, 28)), "label": int(label)}

    builder = RealMnistSlice(data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare()
    return data_dir


@pytest.fixture(scope="module")
def slice_dir(tmp_path_factory, mnist) -> Path:
    root = tmp_path_factory.mktemp("tfds")
    return write_tfds(
        root,
        SLICE,
        {
            "train": (mnist.train_images[:N_TRAIN], mnist.train_labels[:N_TRAIN]),
            "test": (mnist.test_images[:N_TEST], mnist.test_labels[:N_TEST]),
        },
    )


def rows(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Image + label rows in a canonical order: compares two splits as multisets of examples."""
    table = np.concatenate([images.reshape(len(images), -1), labels.reshape(-1, 1)], axis=1).astype(np.uint8)
    return np.sort(np.ascontiguousarray(table).view(np.dtype((np.void, table.shape[1]))).ravel())


def one_paragraph(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message


def split_tfds(compose, *overrides: str):
    return OmegaConf.to_container(compose(["benchmark=split_tfds", *overrides]), resolve=True)


# ----------------------------------------------------------------------------------------------
# Success: real MNIST written by TFDS, read back through load_dataset("tfds:...")
# ----------------------------------------------------------------------------------------------


def test_loads_real_mnist_written_by_tfds(slice_dir: Path, mnist) -> None:
    name = f"tfds:{SLICE}@{slice_dir}"
    ds = load_dataset(name, progress=False)
    assert ds.name == name and ds.num_classes == 10
    assert ds.train_images.shape == (N_TRAIN, 784) and ds.test_images.shape == (N_TEST, 784)
    assert ds.train_labels.shape == (N_TRAIN,) and ds.test_labels.shape == (N_TEST,)
    for arr in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels):
        assert arr.dtype == np.uint8 and not arr.flags.writeable
    # TFDS stores examples in its own (hashed) order: the same examples, as multisets.
    assert np.array_equal(
        rows(ds.train_images, ds.train_labels), rows(mnist.train_images[:N_TRAIN], mnist.train_labels[:N_TRAIN])
    )
    assert np.array_equal(
        rows(ds.test_images, ds.test_labels), rows(mnist.test_images[:N_TEST], mnist.test_labels[:N_TEST])
    )
    # The prepared order is deterministic, and the load is memoised per process.
    assert load_dataset(name, progress=False) is ds
    data.clear_memory_cache()
    again = load_dataset(name, progress=False)
    assert again is not ds and np.array_equal(again.train_images, ds.train_images)
    assert np.array_equal(again.test_labels, ds.test_labels)
    # Written in the format that needs no TensorFlow to read.
    assert (slice_dir / SLICE / "1.0.0" / f"{SLICE}-train.array_record-00000-of-00001").is_file()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="TFDS needs TensorFlow to prepare a data set (pip install tensorflow-cpu); the TF-free path is tested above",
)
def test_tfds_prepares_real_mnist_offline(tmp_path: Path, mnist) -> None:
    """TFDS's own mnist builder prepares all of MNIST, offline, from our SHA-256-verified IDX files.

    TFDS reuses a download found in its download folder under the name it derives from the URL
    and the registered checksum (with its .INFO file) without fetching it again; the gzip bytes
    are ours (the contents are the verified originals), so TFDS never touches the network.
    """
    from etils import epath
    from tensorflow_datasets.core.download import resource as resource_lib

    builder = tfds.builder("mnist", data_dir=str(tmp_path))
    for url, info in builder.url_infos.items():  # the four .gz files of MNIST
        fname = url.rsplit("/", 1)[1]
        path = epath.Path(tmp_path) / "downloads" / "mnist" / resource_lib.get_dl_fname(url, info.checksum)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(data.cache_dir() / "mnist" / fname.removesuffix(".gz"), "rb") as src, gzip.open(path, "wb") as out:
            shutil.copyfileobj(src, out)
        resource_lib.write_info_file(url=url, path=path, dataset_name="mnist", original_fname=fname, url_info=info)
    ds = load_dataset(f"tfds:mnist@{tmp_path}", progress=False)
    assert ds.train_images.shape == (60000, 784) and ds.test_images.shape == (10000, 784)
    assert np.array_equal(rows(ds.train_images, ds.train_labels), rows(mnist.train_images, mnist.train_labels))
    assert np.array_equal(rows(ds.test_images, ds.test_labels), rows(mnist.test_images, mnist.test_labels))
    # Prepared as array_record, so a process without TensorFlow reads it too.
    assert (tmp_path / "mnist" / "3.0.1" / "mnist-train.array_record-00000-of-00001").is_file()


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="writing TFRecords needs TensorFlow")
def test_tfrecord_data_sets_need_tensorflow_to_read(tmp_path: Path, mnist, monkeypatch) -> None:
    """TFDS's default format (TFRecord): read through TensorFlow when it is installed, else a clear error."""
    train, test = (mnist.train_images[:256], mnist.train_labels[:256]), (mnist.test_images[:64], mnist.test_labels[:64])
    write_tfds(tmp_path, "cl_sweep_mnist_tfrecord", {"train": train, "test": test}, file_format="tfrecord")
    ds = load_dataset(f"tfds:cl_sweep_mnist_tfrecord@{tmp_path}", progress=False)
    assert np.array_equal(rows(ds.train_images, ds.train_labels), rows(*train))
    assert np.array_equal(rows(ds.test_images, ds.test_labels), rows(*test))
    data.clear_memory_cache()
    monkeypatch.setattr(tfds_loader, "_tensorflow_available", lambda: False)
    with pytest.raises(TFDSUnavailableError) as info:
        load_dataset(f"tfds:cl_sweep_mnist_tfrecord@{tmp_path}", progress=False)
    one_paragraph(str(info.value))
    assert "in the tfrecord format, which only TensorFlow can read" in str(info.value)


def test_tfds_data_dir_from_the_environment(slice_dir: Path, mnist, monkeypatch) -> None:
    monkeypatch.setenv("TFDS_DATA_DIR", str(slice_dir))
    ds = load_dataset(f"tfds:{SLICE}", progress=False)
    expected = rows(mnist.test_images[:N_TEST], mnist.test_labels[:N_TEST])
    assert np.array_equal(rows(ds.test_images, ds.test_labels), expected)


def test_dataset_names_round_trip() -> None:
    assert tfds_dataset_name("kmnist") == "tfds:kmnist"
    assert tfds_dataset_name("emnist/letters", "/data/tfds") == "tfds:emnist/letters@/data/tfds"
    assert parse_tfds_dataset("tfds:mnist:3.0.1@/d") == ("mnist:3.0.1", "/d")
    assert parse_tfds_dataset("tfds:kmnist") == ("kmnist", None)


def test_config_composes_validates_and_splits(compose, slice_dir: Path) -> None:
    cfg = split_tfds(compose, f"benchmark.tfds_name={SLICE}", f"benchmark.tfds_data_dir={slice_dir}")
    bench = cfg["benchmark"]
    from cl_sweep.components.benchmarks import benchmark_of

    assert bench["name"] == "split_tfds" and benchmark_of(bench).dataset == f"tfds:{SLICE}@{slice_dir}"
    assert (bench["num_tasks"], bench["classes_per_task"], bench["batch_size"]) == (5, 2, 64)
    validate(cfg)
    # What the trainer derives from a config (as tests/test_configs.py checks for every option).
    from cl_sweep.training.train import hyperparameters_of, members_of, population_key, structure_of

    assert dict(structure_of(cfg).model_static)["hidden_size"] == cfg["model"]["hidden_size"] and len(members_of(cfg, [0, 1])) == 2
    assert all("." in k for k in hyperparameters_of(cfg))
    assert ("tfds_name", SLICE) in population_key(cfg)[1]  # jobs on other data sets never share a population
    ds = load_dataset(benchmark_of(bench).dataset, progress=False)
    split = class_incremental_split(ds.train_labels, ds.test_labels, bench["num_tasks"], bench["classes_per_task"])
    assert split.task_classes == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    for t, idx in enumerate(split.train_indices):
        assert len(idx) > 0 and set(np.unique(ds.train_labels[idx])) == {2 * t, 2 * t + 1}
    # Other splits of the same data set: 3 tasks of 3 classes (label 9 unused), 1 task of all 10.
    validate(split_tfds(compose, f"benchmark.tfds_name={SLICE}", f"benchmark.tfds_data_dir={slice_dir}",
                        "benchmark.num_tasks=3", "benchmark.classes_per_task=3"))
    validate(split_tfds(compose, f"benchmark.tfds_name={SLICE}", f"benchmark.tfds_data_dir={slice_dir}",
                        "benchmark.num_tasks=1", "benchmark.classes_per_task=10"))


@pytest.mark.slow
def test_trains_on_a_tfds_data_set_through_the_entry_point(slice_dir: Path, tmp_path: Path, mnist) -> None:
    """`python -m cl_sweep benchmark=split_tfds ...` on the real MNIST slice written by TFDS: the
    job trains every task and its result names the data set."""
    import json

    from conftest import run_cli

    out = tmp_path / "run"
    proc = run_cli("benchmark=split_tfds", f"benchmark.tfds_name={SLICE}", f"benchmark.tfds_data_dir={slice_dir}",
                   "optimizer.learning_rate=0.01", "model.update_clip=null",  # ~4 steps per task in the slice
                   "n_seeds=1", "progress=false", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((out / "result.json").read_text())
    assert r["benchmark"] == f"split_tfds:{SLICE}" and r["status"] == "ok"
    diagonal = np.diagonal(np.asarray(r["accuracy_matrix"][0], float))
    assert diagonal.shape == (5,) and diagonal.mean() > 0.8  # each task learned while it is the newest


def test_first_line_is_the_command() -> None:
    from cl_sweep.components.benchmarks import split_tfds as registered

    first = registered.__doc__.splitlines()[0]
    assert first.startswith("python -m cl_sweep benchmark=split_tfds benchmark.tfds_name=")


# ----------------------------------------------------------------------------------------------
# Failures: one paragraph naming the bad value
# ----------------------------------------------------------------------------------------------


def test_task_split_larger_than_the_data_set(compose, slice_dir: Path) -> None:
    cfg = split_tfds(compose, f"benchmark.tfds_name={SLICE}", f"benchmark.tfds_data_dir={slice_dir}",
                     "benchmark.num_tasks=4", "benchmark.classes_per_task=3")
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    msg = str(info.value)
    one_paragraph(msg)
    assert "benchmark.num_tasks=4 x benchmark.classes_per_task=3 = 12 classes is not allowed" in msg
    assert f"{SLICE!r} has 10 classes" in msg and "at most 10" in msg


def test_tfds_name_is_required(compose) -> None:
    with pytest.raises(ConfigError) as info:
        validate(split_tfds(compose))
    one_paragraph(str(info.value))
    assert "benchmark.tfds_name=None is not allowed" in str(info.value)
    assert "benchmark.tfds_name=kmnist" in str(info.value)


def test_unknown_name_lists_close_names(compose, tmp_path: Path) -> None:
    with pytest.raises(TFDSUnavailableError) as info:
        load_dataset(f"tfds:kmnistt@{tmp_path}", progress=False)
    msg = str(info.value)
    one_paragraph(msg)
    assert "no data set 'kmnistt'" in msg and "close names: kmnist" in msg and str(tmp_path) in msg
    with pytest.raises(ConfigError) as info:
        validate(split_tfds(compose, "benchmark.tfds_name=kmnistt", f"benchmark.tfds_data_dir={tmp_path}"))
    assert str(info.value).startswith("invalid configuration: benchmark.tfds_name='kmnistt' is not allowed; ")
    assert "kmnist" in str(info.value).split("close names:")[1]


@pytest.mark.parametrize("name", ["emnist/letterz", "mnist:9.9.9"])
def test_unknown_config_or_version(name: str, tmp_path: Path) -> None:
    with pytest.raises(TFDSUnavailableError) as info:
        load_dataset(f"tfds:{name}@{tmp_path}", progress=False)
    msg = str(info.value)
    one_paragraph(msg)
    assert f"data set {name!r}" in msg
    assert ("configs of emnist: " in msg and "letters" in msg) if "/" in name else "versions: 3.0.1" in msg


def test_tensorflow_datasets_not_installed(compose, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # `import tensorflow_datasets` fails
    with pytest.raises(TFDSUnavailableError) as info:
        load_dataset("tfds:kmnist", progress=False)
    one_paragraph(str(info.value))
    assert "tensorflow-datasets is not installed" in str(info.value) and "pip install" in str(info.value)
    with pytest.raises(ConfigError) as info:
        validate(split_tfds(compose, "benchmark.tfds_name=kmnist"))
    assert str(info.value).startswith("cannot use benchmark.tfds_name='kmnist': the package tensorflow-datasets")


def test_not_prepared_and_no_tensorflow_to_prepare_it(compose, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tfds_loader, "_tensorflow_available", lambda: False)
    with pytest.raises(TFDSUnavailableError) as info:
        load_dataset(f"tfds:kmnist@{tmp_path}", progress=False)
    msg = str(info.value)
    one_paragraph(msg)
    assert f"'kmnist' is not prepared in {tmp_path}" in msg
    assert "needs TensorFlow" in msg and "pip install tensorflow-cpu" in msg and "array_record" in msg
    with pytest.raises(ConfigError) as info:  # caught before anything trains
        validate(split_tfds(compose, "benchmark.tfds_name=kmnist", f"benchmark.tfds_data_dir={tmp_path}"))
    assert str(info.value).startswith("cannot use benchmark.tfds_name='kmnist': ")


def test_not_prepared_and_no_network(tmp_path: Path, monkeypatch) -> None:
    """TFDS's real download of KMNIST, through a proxy that refuses connections: no network."""
    from tensorflow_datasets.core.download import downloader

    assert importlib.util.find_spec("importlib_resources"), (
        "tensorflow-datasets 4.9.10 needs the package importlib_resources to prepare a registered data set "
        "(tensorflow/datasets#11212) but does not declare it: it must be in the project's dependencies"
    )

    with socket.socket() as s:  # a local port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{port}")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(downloader, "MAX_RETRIES", 0)  # TFDS retries for minutes otherwise
    # Let the loader go as far as asking TFDS to prepare (TensorFlow is needed only after the download).
    monkeypatch.setattr(tfds_loader, "_tensorflow_available", lambda: True)
    with pytest.raises(TFDSUnavailableError) as info:
        load_dataset(f"tfds:kmnist@{tmp_path}", progress=False)
    msg = str(info.value)
    one_paragraph(msg)
    assert f"TFDS could not prepare data set 'kmnist' in {tmp_path} (" in msg
    assert "needs the network" in msg and "tfds build kmnist --file_format=array_record" in msg
    assert not (tmp_path / "kmnist" / "3.0.1" / "dataset_info.json").exists()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("ag_news_subset", "its input 'description' is a Text, not an Image"),
        ("cats_vs_dogs", "its images have no fixed shape ((None, None, 3))"),
        ("binarized_mnist", "its supervised keys are None"),
    ],
)
def test_not_image_classification(compose, name: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(TFDSUnavailableError) as info:
        load_dataset(f"tfds:{name}@{tmp_path}", progress=False)
    msg = str(info.value)
    one_paragraph(msg)
    assert f"TFDS data set {name!r} is not an image-classification data set" in msg and why in msg
    with pytest.raises(ConfigError) as info:
        validate(split_tfds(compose, f"benchmark.tfds_name={name}", f"benchmark.tfds_data_dir={tmp_path}"))
    assert str(info.value).startswith(f"invalid configuration: benchmark.tfds_name={name!r} is not allowed; ")


def test_no_test_split(tmp_path: Path, mnist) -> None:
    write_tfds(tmp_path, "cl_sweep_mnist_train_only", {"train": (mnist.train_images[:64], mnist.train_labels[:64])})
    with pytest.raises(TFDSUnavailableError) as info:
        load_dataset(f"tfds:cl_sweep_mnist_train_only@{tmp_path}", progress=False)
    one_paragraph(str(info.value))
    assert "has the splits ['train']" in str(info.value) and "needs a 'train' and a 'test' split" in str(info.value)


def test_more_classes_than_uint8_labels_hold(tmp_path: Path, mnist) -> None:
    split = (mnist.test_images[:32], mnist.test_labels[:32])
    write_tfds(tmp_path, "cl_sweep_mnist_300_classes", {"train": split, "test": split}, num_classes=300)
    with pytest.raises(TFDSUnavailableError) as info:
        load_dataset(f"tfds:cl_sweep_mnist_300_classes@{tmp_path}", progress=False)
    one_paragraph(str(info.value))
    assert "it has 300 classes; uint8 labels hold at most 256" in str(info.value)


def test_cli_prints_one_paragraph_and_trains_nothing(tmp_path: Path) -> None:
    proc = run_cli(
        "benchmark=split_tfds", "benchmark.tfds_name=kmnistt", f"benchmark.tfds_data_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}", timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("cl_sweep: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("cl_sweep: invalid configuration: benchmark.tfds_name='kmnistt' is not allowed; ")
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "result.json").exists()
