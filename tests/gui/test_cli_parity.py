"""The same job through the window and through `flasher flash` gives the same bytes: both faces
build the same DeviceConfig and call the same pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from flasher.cache import ImageCache
from flasher.cli.main import main as cli_main
from flasher.gui.app import build_services, build_window
from flasher.gui.progress import FlashState
from flasher.sandbox.server import SandboxServer
from tests.gui.driving import App


def test_window_and_cli_write_identical_images(
    qtbot: QtBot,
    sandbox: SandboxServer,
    image_cache: ImageCache,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from_gui, from_cli = tmp_path / "gui.img", tmp_path / "cli.img"
    for name in ("BALENA_API_KEY", "BALENA_TOKEN", "FLASHER_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cli-cache"))
    monkeypatch.setenv("FLASHER_WIFI_KEY", "correct-horse")

    backend = build_services(api_url=sandbox.url, config_dir=tmp_path / "config", cache=image_cache)
    controller, window = build_window(backend.services)
    qtbot.addWidget(window)
    window.show()
    controller.load_device_types()
    app = App(controller, window, qtbot)
    try:
        app.to_configure("pi 4", "raspberrypi4-64")
        version = window.controller.selection.os_version  # type: ignore[union-attr]
        app.use_wifi("Lab", "correct-horse")
        app.type_into(window.configure_page.hostname_edit, "kiosk")
        app.to_targets()
        app.add_file_target(from_gui)
        app.flash()
        assert controller.state is FlashState.DONE
    finally:
        controller.shutdown()

    code = cli_main(
        [
            "--api-url",
            sandbox.url,
            "flash",
            "--device-type",
            "raspberrypi4-64",
            "--version",
            str(version),
            "--network",
            "wifi",
            "--wifi-ssid",
            "Lab",
            "--hostname",
            "kiosk",
            "--target",
            str(from_cli),
            "--yes",
        ]
    )
    assert code == 0
    assert from_gui.read_bytes() == from_cli.read_bytes()
