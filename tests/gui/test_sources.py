"""The OS step's other sources and memory: an image from a URL (its device type and version read
from inside it), a URL that fails in plain words, and the last choices restored at start."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from flasher.balena.session import PINE_PREFIX
from flasher.cache import ImageCache
from flasher.gui.app import build_services, build_window
from flasher.gui.window import CONFIGURE
from flasher.settings import Settings
from tests.conftest import ImageFactory
from tests.gui.conftest import MakeApp
from tests.support.httpserver import HttpTestServer

OPEN_TIMEOUT_MS = 30_000


def test_image_from_a_url_shows_what_it_contains(
    make_app: MakeApp,
    mbr_image: ImageFactory,
    compressed_image: Callable[[Path, str], Path],
) -> None:
    image = mbr_image(device_type="raspberrypi3", os_version="5.3.21+rev3")
    packed = compressed_image(image.path, "gz")
    app = make_app()
    page = app.window.os_page
    with HttpTestServer() as server:
        url = server.serve("/balena-raspberrypi3.img.gz", packed.read_bytes())
        app.click(page.url_radio)
        app.type_into(page.url_edit, url)
        app.click(page.url_open)
        app.qtbot.waitUntil(lambda: page.selection() is not None, timeout=OPEN_TIMEOUT_MS)
    selection = page.selection()
    assert selection is not None
    assert (selection.device_type, selection.os_version) == ("raspberrypi3", "5.3.21+rev3")
    assert "raspberrypi3" in page.url_status.text()
    assert "balenaOS 5.3.21+rev3" in page.url_status.text()
    app.next()
    config = app.window.configure_page.config()
    assert config is not None and config.device_type == "raspberrypi3"


def test_failed_download_is_said_in_plain_words(make_app: MakeApp) -> None:
    app = make_app()
    page = app.window.os_page
    with HttpTestServer() as server:
        app.click(page.url_radio)
        app.type_into(page.url_edit, f"{server.url}/missing.img.gz")
        app.click(page.url_open)
        app.qtbot.waitUntil(page.url_error.isVisible, timeout=OPEN_TIMEOUT_MS)
    assert "404" in page.url_error.text()
    assert "Traceback" not in page.url_error.text()
    assert page.selection() is None
    assert not app.window.next.isEnabled()


def test_last_choices_are_restored(make_app: MakeApp) -> None:
    saved = Settings(
        device_type="intel-nuc",
        network="wifi",
        wifi_ssid="Lab",
        hostname="gateway",
        poll_interval_min=30,
    )
    app = make_app(settings=saved)
    page = app.window.os_page
    app.qtbot.waitUntil(lambda: page.selection() is not None, timeout=OPEN_TIMEOUT_MS)
    device = page.current_device_type()
    assert device is not None and device.slug == "intel-nuc"
    app.next()
    assert app.page() == CONFIGURE
    configure = app.window.configure_page
    assert configure.wifi_radio.isChecked()
    assert (configure.ssid_edit.text(), configure.hostname_edit.text()) == ("Lab", "gateway")
    assert configure.poll_spin.value() == 30
    assert configure.key_edit.text() == ""


def test_remembered_wifi_key_is_saved_only_when_asked(
    make_app: MakeApp, tmp_path: Path, config_dir: Path
) -> None:
    app = make_app()
    app.to_configure()
    app.use_wifi("Lab", "correct-horse")
    app.click(app.window.configure_page.remember_check)
    app.to_targets()
    app.add_file_target(tmp_path / "card.img")
    app.flash()
    restored = Settings.load(config_dir)
    assert (restored.remember_secrets, restored.wifi_key) == (True, "correct-horse")
    assert ((config_dir / "settings.json").stat().st_mode & 0o777) == 0o600


def test_catalog_failure_is_explained_and_can_be_retried(
    qtbot: QtBot, config_dir: Path, image_cache: ImageCache
) -> None:
    """Against an HTTP server that first answers nonsense, then a one-type catalog."""
    with HttpTestServer() as server:
        path = f"/{PINE_PREFIX}/device_type"
        server.serve(path, json.dumps({"d": "not rows"}).encode())
        # The versions query that follows a successful listing finds none.
        server.serve(f"/{PINE_PREFIX}/application", json.dumps({"d": []}).encode())
        backend = build_services(api_url=server.url, config_dir=config_dir, cache=image_cache)
        controller, window = build_window(backend.services)
        qtbot.addWidget(window)
        window.show()
        page = window.os_page
        busy: list[bool] = []
        controller.catalog_busy.connect(busy.append)
        try:
            controller.load_device_types()
            qtbot.waitUntil(page.try_again.isVisible, timeout=OPEN_TIMEOUT_MS)
            assert "unexpected shape" in page.banner.message.text()
            row = {
                "slug": "raspberrypi4-64",
                "name": "Raspberry Pi 4",
                "is_of__cpu_architecture": [{"slug": "aarch64"}],
            }
            server.serve(path, json.dumps({"d": [row]}).encode())
            qtbot.mouseClick(page.try_again, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: controller.device_types.rowCount() == 1)
            # Nothing is picked for the user: choosing the type asks for its versions.
            view = page.device_view
            qtbot.mouseClick(
                view.viewport(),
                Qt.MouseButton.LeftButton,
                pos=view.visualRect(view.model().index(0, 0)).center(),
            )
            qtbot.waitUntil(
                lambda: (
                    bool(server.requests_for(f"/{PINE_PREFIX}/application"))
                    and busy.count(True) == busy.count(False)
                ),
                timeout=OPEN_TIMEOUT_MS,
            )
            assert not page.banner.isVisible()
            assert len(server.requests_for(path)) >= 2
        finally:
            controller.shutdown()
