"""Fixtures for the desktop app's tests: offscreen Qt, the built-in sandbox (tiny images), a
shared image cache, `make_app`, which builds the app's real object graph around them, and a
1 GiB image that takes a while to write whole.

QT_QPA_PLATFORM is set here, before anything imports Qt.
"""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from flasher.cache import ImageCache
from flasher.sandbox.images import ImageScale
from flasher.sandbox.server import SandboxServer
from flasher.settings import Settings
from flasher.writer.launchers import Launcher
from tests.conftest import ImageFactory
from tests.gui.driving import App

MakeApp = Callable[..., App]
BIG_IMAGE_BYTES = 1024 * 1024 * 1024


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer.start(image_scale=ImageScale.tiny()) as server:
        yield server


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> ImageCache:
    """One cache for the session: the first flash downloads, later ones start from it."""
    return ImageCache(tmp_path_factory.mktemp("gui-cache"))


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def make_app(
    qtbot: QtBot, sandbox: SandboxServer, image_cache: ImageCache, config_dir: Path
) -> Iterator[MakeApp]:
    """`make_app(launcher=None, settings=None, sandbox_login=False)`: the app on the sandbox,
    shown, catalog loading; `sandbox_login` acts as logged in to the sandbox's API."""
    from flasher.gui.app import build_services, build_window

    made: list[App] = []

    def make(
        *,
        launcher: Launcher | None = None,
        settings: Settings | None = None,
        sandbox_login: bool = False,
    ) -> App:
        if settings is not None:
            settings.save(config_dir)
        backend = build_services(
            sandbox=sandbox,
            config_dir=config_dir,
            cache=image_cache,
            launcher=launcher,
            sandbox_login=sandbox_login,
        )
        controller, window = build_window(backend.services)
        qtbot.addWidget(window)
        window.show()
        controller.load_device_types()
        app = App(controller, window, qtbot)
        made.append(app)
        return app

    yield make
    for app in made:
        app.controller.shutdown()


@pytest.fixture
def big_image(mbr_image: ImageFactory, tmp_path: Path) -> Path:
    """A balenaOS image padded to 1 GiB (sparse): with "Write every byte" it takes long enough
    to write that a cancel lands mid-write."""
    built = mbr_image()
    big = tmp_path / "big.img"
    subprocess.run(["cp", "--sparse=always", str(built.path), str(big)], check=True)
    big.chmod(0o644)
    os.truncate(big, BIG_IMAGE_BYTES)
    return big
