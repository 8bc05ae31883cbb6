"""Prepare TFDS's own `mnist` / `fashion_mnist` builders offline from cl_sweep's verified files.

    .venv/bin/pip install -e '.[tfds]'          # TFDS needs TensorFlow to prepare a data set
    .venv/bin/python scripts/tfds_offline.py mnist fashion_mnist --data-dir ~/tensorflow_datasets
    .venv/bin/python -m cl_sweep benchmark=split_tfds benchmark.tfds_name=mnist benchmark.tfds_data_dir=~/tensorflow_datasets

For machines without internet access to TFDS's download URLs (like this project's). TFDS reuses a
download found in its download folder under the name it derives from the URL and its registered
checksum (with an .INFO file) and does not fetch it again; this script puts there the gzip of each
original IDX file from cl_sweep's cache (SHA-256 verified against docs/protocol.md / data/datasets.py on
acquisition), then lets the builder prepare the data set in the array_record format, which
cl_sweep reads without TensorFlow. The examples are TFDS's own (its builder parses the files and
orders the records), so this is exactly what `tfds.load(name)` would give online.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cl_sweep.data import datasets as data  # noqa: E402  (after the path tweak: works from a source checkout)


def prepare(name: str, data_dir: Path) -> None:
    """Seeds TFDS's download folder for builder ``name`` from cl_sweep's cache and prepares it."""
    import tensorflow_datasets as tfds
    from etils import epath
    from tensorflow_datasets.core.download import resource as resource_lib

    data.load_dataset(name, progress=False)  # makes sure the verified files are in the cache
    builder = tfds.builder(name, data_dir=str(data_dir))
    for url, info in builder.url_infos.items():
        fname = url.rsplit("/", 1)[1]
        target = epath.Path(data_dir) / "downloads" / name / resource_lib.get_dl_fname(url, info.checksum)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(data.cache_dir() / name / fname.removesuffix(".gz"), "rb") as src, gzip.open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        resource_lib.write_info_file(url=url, path=target, dataset_name=name, original_fname=fname, url_info=info)
    builder.download_and_prepare(file_format="array_record")
    print(f"{name}: prepared under {data_dir / name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=sorted(data.DATASETS), help="TFDS builders to prepare")
    parser.add_argument("--data-dir", type=Path, required=True, help="TFDS data folder (benchmark.tfds_data_dir)")
    args = parser.parse_args(argv)
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        print("tfds_offline: TFDS needs TensorFlow to prepare a data set: .venv/bin/pip install -e '.[tfds]'", file=sys.stderr)
        return 2
    for name in args.names:
        prepare(name, args.data_dir.expanduser())
    return 0


if __name__ == "__main__":
    sys.exit(main())
