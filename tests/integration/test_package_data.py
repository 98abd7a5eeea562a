"""Package data is found through importlib.resources: from the checkout, and from a built wheel
imported as a zip (as a zipapp would be), so every kind of install finds the sandbox catalog
and the app icon."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from flasher.resources import resource
from flasher.sandbox.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]
DATA_FILES = ("flasher/data/sandbox-catalog.json", "flasher/data/icons/io.balena.Flasher.svg")


def test_the_catalog_is_package_data() -> None:
    raw = json.loads(resource("sandbox-catalog.json").read_text(encoding="utf-8"))
    assert load_catalog().device_types and raw["device_types"]


def test_a_missing_data_file_is_named() -> None:
    with pytest.raises(FileNotFoundError, match=r"no-such\.json"):
        resource("no-such.json")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy, so the build leaves nothing in the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("flasher", "resources"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out, src],
        capture_output=True,
        text=True,
        check=False,
    )
    if build.returncode != 0 and "No matching distribution" in build.stderr + build.stdout:
        pytest.skip("no package index to fetch the build tools (setuptools) from")
    assert build.returncode == 0, build.stdout + build.stderr
    (found,) = out.glob("flasher-*.whl")
    return found


def test_the_wheel_carries_the_data_files(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(DATA_FILES) <= names


def test_the_catalog_loads_from_the_wheel_as_a_zip(wheel: Path) -> None:
    code = (
        "import flasher.resources, flasher.sandbox.catalog as c\n"
        "assert flasher.resources.__file__.startswith(__import__('sys').argv[1])\n"
        "print(len(c.load_catalog().device_types))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(wheel)],
        cwd=wheel.parent,  # not the checkout, whose flasher would be found first
        env={"PYTHONPATH": str(wheel), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) == len(load_catalog().device_types)
