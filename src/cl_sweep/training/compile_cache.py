"""XLA's persistent compilation cache, on by default: a job's programs are compiled once per machine.

Every ``python -m cl_sweep`` process used to compile its programs again (init, the training loop,
the evaluation, the host's small checks): about 3 s of the default job's 20 on a 2-core CPU, and
as much again for each population size and structure of a sweep's process. JAX can keep compiled
executables on disk (``jax_compilation_cache_dir``); a later process with the same program, the
same jax and the same machine loads them instead. The executable is the one XLA compiled, so the
numbers are the same bits (``tests/test_compile_cache.py`` checks it).

Where: ``$CL_SWEEP_XLA_CACHE`` if set (``0`` turns the cache off), else ``xla/<key>`` under the data
cache (cl_sweep.data.datasets.cache_dir), where ``<key>`` hashes jax's version, the machine and its
CPU's flags: XLA compiles for the CPU it runs on, and a cache shared by machines of different CPUs
(a home folder on a cluster) must not hand one the other's code. A user's own
``jax_compilation_cache_dir`` (``JAX_COMPILATION_CACHE_DIR``) is left as it is. Beyond 2 GiB the least recently used programs go.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from pathlib import Path

__all__ = ["ENV", "cache_path", "cpu_flags", "enable"]

ENV = "CL_SWEEP_XLA_CACHE"
MAX_BYTES = 2 << 30
log = logging.getLogger(__name__)
_enabled: Path | None | bool = False  # False: not decided yet; None: off; a Path: on, there


def cpu_flags() -> str:
    """The CPU's instruction-set flags as /proc/cpuinfo lists them ("" where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):  # x86-64, ARM
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cache_path() -> Path | None:
    """The folder the cache uses in this process, or None when ``$CL_SWEEP_XLA_CACHE`` is 0."""
    import jax

    from cl_sweep.data.datasets import cache_dir

    value = os.environ.get(ENV, "").strip()
    if value == "0":
        return None
    if value:
        return Path(value).expanduser().absolute()
    import jaxlib

    key = hashlib.sha256("\0".join([jax.__version__, jaxlib.__version__, platform.machine(), cpu_flags()]).encode())
    return cache_dir() / "xla" / key.hexdigest()[:16]


def enable() -> Path | None:
    """Turns the cache on for this process (once; later calls return the same answer); returns its folder."""
    global _enabled
    if _enabled is not False:
        return _enabled
    import jax

    if jax.config.jax_compilation_cache_dir:  # the user's own choice
        _enabled = Path(jax.config.jax_compilation_cache_dir)
        return _enabled
    path = cache_path()
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a read-only home: compile as before, say so once
            log.warning("the XLA compilation cache is off: %s cannot be created (%s); set %s to a writable folder, "
                        "or to 0", path, e.strerror, ENV)
            path = None
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", str(path))
        # Every program: the small host-side checks compile in ~0.05 s each, and a job has a dozen of them.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        # least recently used entries go beyond this (a job's programs take about 0.4 MB on a CPU)
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    _enabled = path
    return path
