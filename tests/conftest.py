"""Shared pytest fixtures: session-cached balenaOS-layout images built with the real tools.

The cached images are read-only; a test that modifies one copies it first
(`tests.support.images.copy_image`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flasher import dataclass_code
from tests.support.images import BuiltImage, build_image, compress
from tests.support.keptcode import forget_kept_code
from tests.support.loopdev import LoopDevices, require_loop

ImageFactory = Callable[..., BuiltImage]


@pytest.fixture(scope="session")
def image_factory(tmp_path_factory: pytest.TempPathFactory) -> ImageFactory:
    """`image_factory(**build_image_options) -> BuiltImage`, built once per option set."""
    built: dict[str, BuiltImage] = {}
    root = tmp_path_factory.mktemp("images")

    def make(**options: Any) -> BuiltImage:
        key = repr(sorted(options.items()))
        if key not in built:
            image = build_image(root / f"build{len(built)}", **options)
            os.chmod(image.path, 0o444)
            built[key] = image
        return built[key]

    return make


@pytest.fixture(scope="session")
def mbr_image(image_factory: ImageFactory) -> ImageFactory:
    """`mbr_image(**options)`: an MBR balenaOS image (boot, rootA, rootB, extended, state, data)."""
    return lambda **options: image_factory(scheme="mbr", **options)


@pytest.fixture(scope="session")
def gpt_image(image_factory: ImageFactory) -> ImageFactory:
    """`gpt_image(**options)`: a GPT balenaOS image with five named partitions."""
    return lambda **options: image_factory(scheme="gpt", **options)


@pytest.fixture(scope="session")
def compressed_image() -> Callable[[Path, str], Path]:
    """`compressed_image(path, kind) -> Path`: `compress` once per (path, kind), read-only."""
    made: dict[tuple[Path, str], Path] = {}

    def make(path: Path, kind: str) -> Path:
        if (path, kind) not in made:
            out = compress(path, kind)
            os.chmod(out, 0o444)
            made[path, kind] = out
        return made[path, kind]

    return make


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[LoopDevices]:
    """Loop devices of the test's own (skipped where they cannot exist), detached afterwards."""
    require_loop()
    with LoopDevices(tmp_path) as devices:
        yield devices


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image cache of the test's own, and no API URL from the environment."""
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FLASHER_API_URL", raising=False)


@pytest.fixture(autouse=True)
def _no_kept_dataclass_code(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test that runs the `flasher` entry in this process neither reads nor writes the
    package's kept dataclass code (flasher.dataclass_code), and leaves `dataclasses` as it was."""
    monkeypatch.setattr(dataclass_code, "cache_path", lambda: None)
    yield
    forget_kept_code()
