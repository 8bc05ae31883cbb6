"""TensorFlow Datasets: any TFDS image-classification data set as a data set (benchmark=split_tfds).

The name ``tfds:<builder>`` (or ``tfds:<builder>@<TFDS data dir>``, e.g. ``tfds:kmnist``,
``tfds:emnist/letters``, ``tfds:cifar10@/data/tfds``) loads it through TFDS (see
:func:`load_tfds`; :func:`cl_sweep.data.datasets.load_dataset` hands such names here): a prepared
copy is read without TensorFlow when it is in TFDS's ``array_record`` format; an unprepared one is
prepared by TFDS when TensorFlow is installed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cl_sweep.data.datasets import DataUnavailableError, Dataset, _memoised
from cl_sweep.data.sources import _short_reason

__all__ = [
    "TFDSUnavailableError",
    "TFDS_PREFIX",
    "load_tfds",
    "parse_tfds_dataset",
    "tfds_dataset_name",
    "tfds_num_classes",
]

logger = logging.getLogger(__name__)

#: A data set name ``tfds:<builder>[@<TFDS data dir>]`` is loaded through TFDS.
TFDS_PREFIX = "tfds:"
#: The record format this loader asks TFDS to prepare: the one TFDS reads without TensorFlow.
TFDS_FILE_FORMAT = "array_record"
#: What ``benchmark.tfds_name`` accepts, for the messages.
_TFDS_ALLOWED = (
    "allowed: a TFDS image-classification data set (images of one fixed shape, uint8; a class "
    "label of at most 256 classes; 'train' and 'test' splits), named as tfds.builder takes it, "
    "e.g. mnist, kmnist, fashion_mnist, emnist/letters, cifar10, svhn_cropped "
    "(tfds.list_builders() lists every TFDS data set)"
)
_TFDS_READ_CHUNK = 8192  # examples decoded per array_record read


class TFDSUnavailableError(DataUnavailableError):
    """A TFDS data set cannot be loaded as a benchmark; the message is one paragraph.

    Attributes:
        reason: The message without its final period (what is wrong, and what to do).
        config_error: True when the configured value is at fault (unknown name, not image
            classification, no train/test split), False when the environment is (a package
            missing, no TensorFlow to prepare the data, a failed download).
    """

    def __init__(self, reason: str, *, config_error: bool) -> None:
        super().__init__(reason.rstrip(".") + ".")
        self.reason = reason.rstrip(".")
        self.config_error = config_error


def tfds_dataset_name(tfds_name: str | None, tfds_data_dir: str | None = None) -> str:
    """The data set name of a TFDS builder: ``tfds:<builder>`` or ``tfds:<builder>@<dir>``.

    This is what ``benchmark.dataset`` becomes for ``benchmark=split_tfds``, so every place
    keyed by the data set name (the per-process device cache, population keys) tells
    different builders and different TFDS folders apart.
    """
    name = "" if tfds_name is None else str(tfds_name)
    return f"{TFDS_PREFIX}{name}" + (f"@{tfds_data_dir}" if tfds_data_dir else "")


def parse_tfds_dataset(name: str) -> tuple[str, str | None]:
    """``"tfds:kmnist@/data"`` -> ``("kmnist", "/data")``; ``"tfds:kmnist"`` -> ``("kmnist", None)``."""
    if not name.startswith(TFDS_PREFIX):
        raise ValueError(f"{name!r} is not a TFDS data set name ({TFDS_PREFIX}<builder>[@<dir>])")
    builder, sep, directory = name[len(TFDS_PREFIX) :].partition("@")
    return builder, (directory if sep and directory else None)


def _tfds_where(data_dir: str | None) -> str:
    """The TFDS data folder used for ``data_dir`` (None: ``$TFDS_DATA_DIR``, else TFDS's default).

    Always passed to TFDS explicitly: TFDS reads ``$TFDS_DATA_DIR`` once, when it is imported.
    """
    chosen = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return str(Path(chosen).expanduser().absolute())


def _tensorflow_available() -> bool:
    """Whether TensorFlow is installed: TFDS needs it to prepare data sets and to read TFRecords."""
    import importlib.util

    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keeps TFDS's chatter off the console while it only reads: its multi-line "Failed to import
    TensorFlow" banner (stdout) and absl warnings such as "OpenCV is not installed"."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        absl.setLevel(level)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise TFDSUnavailableError(
            f"the package tensorflow-datasets is not installed ({_short_reason(exc)}), so no "
            "TFDS data set can be loaded; install it (pip install 'tensorflow-datasets>=4.9') "
            "and run again",
            config_error=False,
        ) from None
    return tfds


def _is_missing_tensorflow(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ImportError) and (
            (exc.name or "").split(".")[0] == "tensorflow" or "'tensorflow'" in str(exc)
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _tfds_builder(tfds, tfds_name: str, data_dir: str | None):
    """``tfds.builder(tfds_name, data_dir=...)``, with every failure as a TFDSUnavailableError."""
    where = _tfds_where(data_dir)
    kwargs = {"data_dir": where}
    if not tfds_name or tfds_name != tfds_name.strip() or "@" in tfds_name:
        raise TFDSUnavailableError(
            f"{tfds_name!r} is not a TFDS builder name; {_TFDS_ALLOWED}", config_error=True
        )
    try:
        with _quiet():
            return tfds.builder(tfds_name, **kwargs)
    except tfds.core.registered.DatasetNotFoundError:
        import difflib

        base = tfds_name.split("/")[0].split(":")[0]
        known = tfds.list_builders(with_community_datasets=False)
        close = difflib.get_close_matches(base, known, n=5, cutoff=0.6)
        hint = f"close names: {', '.join(close)}" if close else "no TFDS name is close to it"
        raise TFDSUnavailableError(
            f"TFDS {tfds.__version__} has no data set {tfds_name!r} (and none prepared under "
            f"that name in {where}; {hint}); {_TFDS_ALLOWED}",
            config_error=True,
        ) from None
    except ImportError as exc:
        # The builder's code imports a package that is missing (usually TensorFlow). A copy
        # that TFDS prepared earlier is readable from its files, without that code.
        try:
            with _quiet():
                return tfds.core.read_only_builder.builder_from_files(tfds_name, **kwargs)
        except Exception:  # noqa: BLE001 - no prepared copy: report the import failure
            pass
        if _is_missing_tensorflow(exc):
            raise TFDSUnavailableError(
                f"TFDS's code for data set {tfds_name!r} needs TensorFlow, which is not "
                f"installed, and no prepared copy of {tfds_name!r} is in {where}; install "
                "TensorFlow (pip install tensorflow-cpu) so that TFDS can prepare it, or set "
                "benchmark.tfds_data_dir (or $TFDS_DATA_DIR) to a folder where it is prepared",
                config_error=False,
            ) from None
        raise TFDSUnavailableError(
            f"TFDS's code for data set {tfds_name!r} needs the package {exc.name or '?'!r}, "
            f"which is not installed ({_short_reason(exc)}); install it (pip install "
            f"{exc.name or '<package>'}) and run again",
            config_error=False,
        ) from None
    except Exception as exc:  # noqa: BLE001 - bad config or version, blocked version, ...
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # 'Failed to construct dataset "x", builder_kwargs "{...}": <what>. Here are ...'
        detail = detail.split('": ', 1)[-1].split(" Here are ", 1)[0].rstrip(". ")
        detail = detail if len(detail) <= 240 else detail[:237] + "..."
        raise TFDSUnavailableError(
            f"TFDS cannot build data set {tfds_name!r} ({detail}{_builder_variants(tfds, tfds_name)}); "
            f"{_TFDS_ALLOWED}",
            config_error=True,
        ) from None


def _builder_variants(tfds, tfds_name: str) -> str:
    """``"; configs of emnist: balanced, byclass, ...; versions: 3.1.0"`` (empty when unknown)."""
    base = tfds_name.split("/")[0].split(":")[0]
    try:
        with _quiet():
            cls = tfds.builder_cls(base)
        configs = [c.name for c in (getattr(cls, "BUILDER_CONFIGS", None) or [])]
        versions = [str(v) for v in [cls.VERSION, *getattr(cls, "SUPPORTED_VERSIONS", [])] if v]
    except Exception:  # noqa: BLE001 - only a hint
        return ""
    text = f"; configs of {base}: {', '.join(configs)}" if configs else f"; {base} has no configs"
    return text + (f"; versions: {', '.join(versions)}" if versions else "")


@dataclass(frozen=True)
class _TFDSKeys:
    image: str
    label: str
    shape: tuple[int, ...]
    num_classes: int


def _np_dtype(feature) -> np.dtype:
    # ``np_dtype`` (TFDS >= 4.8) needs no TensorFlow; ``dtype`` is the TensorFlow dtype.
    dtype = getattr(feature, "np_dtype", None)
    return np.dtype(dtype if dtype is not None else feature.dtype.as_numpy_dtype)


def _image_classification_keys(tfds, builder, tfds_name: str) -> _TFDSKeys:
    """The (image, label) features of an image-classification builder, else a TFDSUnavailableError."""
    info = builder.info
    keys = info.supervised_keys
    features = info.features
    reason = None
    if not (
        isinstance(keys, (tuple, list))
        and len(keys) == 2
        and all(isinstance(k, str) for k in keys)
        and hasattr(features, "keys")
        and all(k in features.keys() for k in keys)
    ):
        reason = f"its supervised keys are {keys!r}, not an (image, label) pair of features"
    else:
        image, label = features[keys[0]], features[keys[1]]
        shape = tuple(getattr(image, "shape", ()) or ())
        if not isinstance(image, tfds.features.Image):
            reason = f"its input {keys[0]!r} is a {type(image).__name__}, not an Image"
        elif _np_dtype(image) != np.uint8:
            reason = f"its images are {_np_dtype(image)}, not uint8"
        elif not shape or any(d is None for d in shape):
            reason = f"its images have no fixed shape ({shape}), so they cannot be one input vector"
        elif not isinstance(label, tfds.features.ClassLabel):
            reason = f"its target {keys[1]!r} is a {type(label).__name__}, not a ClassLabel"
        elif not 1 <= label.num_classes <= 256:
            reason = f"it has {label.num_classes} classes; uint8 labels hold at most 256"
    if reason is not None:
        raise TFDSUnavailableError(
            f"TFDS data set {tfds_name!r} is not an image-classification data set that a "
            f"class-incremental benchmark can use: {reason}; {_TFDS_ALLOWED}",
            config_error=True,
        )
    return _TFDSKeys(keys[0], keys[1], tuple(int(d) for d in shape), int(label.num_classes))


def _is_prepared(builder) -> bool:
    with _quiet():  # "Variant folder ... has no dataset_info.json" is what "not prepared" means
        return bool(builder.is_prepared())


def _file_format(builder) -> str:
    fmt = getattr(builder.info, "file_format", None)
    return str(getattr(fmt, "value", fmt) or "tfrecord")


def _check_readable(tfds, builder, tfds_name: str, where: str, keys: _TFDSKeys) -> None:
    """A prepared copy must have 'train' and 'test' and a format this process can read."""
    splits = sorted(builder.info.splits.keys())
    missing = [s for s in ("train", "test") if s not in splits]
    if missing:
        raise TFDSUnavailableError(
            f"TFDS data set {tfds_name!r} has the splits {splits} (prepared in {where}); the "
            f"benchmark needs a 'train' and a 'test' split; {_TFDS_ALLOWED}",
            config_error=True,
        )
    fmt = _file_format(builder)
    if fmt != TFDS_FILE_FORMAT and not _tensorflow_available():
        raise TFDSUnavailableError(
            f"TFDS data set {tfds_name!r} is prepared in {where} in the {fmt} format, which "
            "only TensorFlow can read, and TensorFlow is not installed; install it (pip install "
            "tensorflow-cpu), or prepare the data set again in the array_record format, which "
            f"TFDS reads without TensorFlow (tfds build {tfds_name} --file_format=array_record "
            "in another folder, then set benchmark.tfds_data_dir to that folder)",
            config_error=False,
        )


def _cannot_prepare(tfds_name: str, where: str) -> TFDSUnavailableError:
    return TFDSUnavailableError(
        f"TFDS data set {tfds_name!r} is not prepared in {where}, and TFDS needs TensorFlow to "
        "prepare (download and convert) it, which is not installed; install it (pip install "
        f"tensorflow-cpu) and run again, or prepare it where TensorFlow is (tfds build "
        f"{tfds_name} --file_format=array_record --data_dir=DIR) and set "
        "benchmark.tfds_data_dir (or $TFDS_DATA_DIR) to that folder; array_record data is "
        "read without TensorFlow",
        config_error=False,
    )


def _prepare_tfds(tfds, builder, tfds_name: str, where: str, progress: bool) -> None:
    if not _tensorflow_available():
        raise _cannot_prepare(tfds_name, where)
    line = (
        f"preparing TFDS data set {tfds_name} in {where} (TFDS downloads and converts it once; "
        "later runs reuse it)"
    )
    logger.info("%s", line)
    if progress:
        print(line, file=sys.stderr)
    t0 = time.perf_counter()
    try:
        builder.download_and_prepare(file_format=TFDS_FILE_FORMAT)
    except ImportError as exc:
        raise TFDSUnavailableError(
            f"TFDS could not prepare data set {tfds_name!r} in {where}: it needs the package "
            f"{exc.name or '?'!r}, which is not installed ({_short_reason(exc)}); install it "
            f"(pip install {exc.name or '<package>'}) and run again",
            config_error=False,
        ) from None
    except Exception as exc:  # noqa: BLE001 - network, checksum, manual download, disk ...
        logger.debug("TFDS preparation failure details", exc_info=True)
        raise TFDSUnavailableError(
            f"TFDS could not prepare data set {tfds_name!r} in {where} ({_short_reason(exc)}). "
            "TFDS downloads the original files from the data set's own site, so this needs the "
            "network (some data sets also need a manual download: see the TFDS catalog page of "
            f"{tfds_name}); without it, prepare the data set on a machine that has it (tfds "
            f"build {tfds_name} --file_format=array_record --data_dir=DIR) and set "
            "benchmark.tfds_data_dir (or $TFDS_DATA_DIR) to that folder",
            config_error=False,
        ) from None
    logger.info("TFDS data set %s prepared in %.1f s", tfds_name, time.perf_counter() - t0)


def _read_tfds_split(tfds, builder, split: str, keys: _TFDSKeys) -> tuple[np.ndarray, np.ndarray]:
    """One split as ``(images [N, *shape] uint8, labels [N] int64)``, in the prepared order."""
    if _file_format(builder) == TFDS_FILE_FORMAT:
        with _quiet():
            source = builder.as_data_source(split=split)  # random access, no TensorFlow
            n = len(source)
            images = np.empty((n, *keys.shape), np.uint8)
            labels = np.empty(n, np.int64)
            for lo in range(0, n, _TFDS_READ_CHUNK):
                hi = min(n, lo + _TFDS_READ_CHUNK)
                for i, record in enumerate(source.__getitems__(range(lo, hi)), start=lo):
                    images[i] = np.asarray(record[keys.image]).reshape(keys.shape)
                    labels[i] = int(record[keys.label])
        return images, labels
    with _quiet():  # TFRecords: only TensorFlow reads them
        images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    return np.asarray(images), np.asarray(labels)


def _tfds_arrays(images: np.ndarray, labels: np.ndarray, tfds_name: str, split: str, keys: _TFDSKeys):
    if images.dtype != np.uint8 or images.shape[1:] != keys.shape or len(images) != len(labels):
        raise TFDSUnavailableError(
            f"TFDS data set {tfds_name!r} split {split!r} gave images {images.dtype} "
            f"{images.shape} and {labels.shape} labels, not uint8 images of shape [N, "
            f"{', '.join(map(str, keys.shape))}] with one label each; {_TFDS_ALLOWED}",
            config_error=True,
        )
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= keys.num_classes):
        raise TFDSUnavailableError(
            f"TFDS data set {tfds_name!r} split {split!r} has labels {int(labels.min())} .. "
            f"{int(labels.max())}, outside 0 .. {keys.num_classes - 1}; {_TFDS_ALLOWED}",
            config_error=True,
        )
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    out = labels.astype(np.uint8)
    flat.setflags(write=False)
    out.setflags(write=False)
    return flat, out


def tfds_num_classes(tfds_name: str, data_dir: str | None = None) -> int:
    """Checks, without reading or preparing anything, that a TFDS data set can be loaded here.

    Used by the config checks (``benchmark=split_tfds``) so that a bad name or a missing
    package stops a job before it starts. Checks: tensorflow-datasets importable, the builder
    known to TFDS (or prepared in the folder), image classification (uint8 image of one fixed
    shape, class label of at most 256 classes), and either prepared with 'train' and 'test' in
    a format readable here, or not prepared and TensorFlow installed to prepare it.

    Returns:
        The number of classes.

    Raises:
        TFDSUnavailableError: Whatever check failed, in one paragraph.
    """
    tfds = _import_tfds()
    where = _tfds_where(data_dir)
    builder = _tfds_builder(tfds, tfds_name, data_dir)
    keys = _image_classification_keys(tfds, builder, tfds_name)
    if _is_prepared(builder):
        _check_readable(tfds, builder, tfds_name, where, keys)
    elif not _tensorflow_available():
        raise _cannot_prepare(tfds_name, where)
    return keys.num_classes


def _load_tfds(name: str, progress: bool) -> Dataset:
    tfds_name, data_dir = parse_tfds_dataset(name)
    tfds = _import_tfds()
    where = _tfds_where(data_dir)
    builder = _tfds_builder(tfds, tfds_name, data_dir)
    keys = _image_classification_keys(tfds, builder, tfds_name)
    if not _is_prepared(builder):
        _prepare_tfds(tfds, builder, tfds_name, where, progress)
        builder = _tfds_builder(tfds, tfds_name, data_dir)  # re-read the prepared info
    _check_readable(tfds, builder, tfds_name, where, keys)
    t0 = time.perf_counter()
    arrays = {}
    for split in ("train", "test"):
        try:
            images, labels = _read_tfds_split(tfds, builder, split, keys)
        except TFDSUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt files, decoder missing, ...
            logger.debug("TFDS read failure details", exc_info=True)
            raise TFDSUnavailableError(
                f"TFDS could not read split {split!r} of data set {tfds_name!r} in {where} "
                f"({_short_reason(exc)}); delete its folder there to have it prepared again",
                config_error=False,
            ) from None
        arrays[split] = _tfds_arrays(images, labels, tfds_name, split, keys)
    logger.info("TFDS data set %s read in %.1f s", tfds_name, time.perf_counter() - t0)
    return Dataset(
        name=name,
        train_images=arrays["train"][0],
        train_labels=arrays["train"][1],
        test_images=arrays["test"][0],
        test_labels=arrays["test"][1],
        num_classes=keys.num_classes,
    )


def load_tfds(name: str, *, progress: bool = True) -> Dataset:
    """Load a TFDS image-classification data set ``tfds:<builder>[@<TFDS data dir>]``.

    ``<builder>`` is what ``tfds.builder`` takes (``kmnist``, ``emnist/letters``,
    ``mnist:3.0.1``); the folder defaults to ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.
    A copy already prepared there is read, in its prepared order: the ``array_record`` format
    without TensorFlow (``builder.as_data_source``), TFRecords with it (``builder.as_dataset``).
    A data set not prepared yet is prepared by TFDS (download and conversion, in the
    ``array_record`` format), which needs TensorFlow and, usually, the network. Images are
    flattened row-major to ``[N, H*W*C]`` uint8, labels are uint8. Memoised per process.

    Raises:
        TFDSUnavailableError: Any failure, in one paragraph that says what to do.
    """
    key = (name, _tfds_where(parse_tfds_dataset(name)[1]))
    return _memoised(key, lambda: _load_tfds(name, progress))
