"""The Makefile's set-up asks for nothing beyond Python and make; what the tests need is said and installed by `make test`."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _recipe(target: str) -> str:
    """Every command `make TARGET` would run in a clean checkout (no .venv yet), sub-makes included."""
    proc = subprocess.run(["make", "-n", "-B", target, "VENV=/nonexistent/venv"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_setup_installs_no_system_package_and_needs_no_root():
    recipe = _recipe("setup")
    assert "pip install" in recipe and "load_dataset('mnist')" in recipe
    for word in ("apt-get", "sudo", "dpkg", "fashion_mnist"):
        assert word not in recipe, word


def test_test_says_which_debian_packages_it_installs_and_why():
    recipe = _recipe("test")
    assert "dataset-fashion-mnist postgresql" in recipe and "installing Debian packages for the tests" in recipe
    assert "pytest" in recipe and "postgres.sh start" not in recipe  # the run starts the server on demand and stops it
