"""The whole flow through the widgets, on the built-in sandbox: pick a device type by searching,
a version, Wi-Fi settings, save to an image file, flash, and see a verified result; the image file
then holds the configured boot partition. The window keeps serving its event loop meanwhile."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QTimer

from flasher.gui.progress import FlashState
from flasher.image.byteio import FileReader
from flasher.image.inspection import boot_filesystem, inspect_image, open_boot_partition
from flasher.image.network import WIFI_KEYFILE_NAME
from flasher.image.partitions import read_partition_table
from tests.conftest import ImageFactory
from tests.gui.conftest import MakeApp
from tests.gui.driving import App


def _flash_wifi_image(app: App, target: Path) -> None:
    app.to_configure("pi 4", "raspberrypi4-64")
    app.use_wifi("Lab", "correct-horse")
    app.to_targets()
    app.add_file_target(target)
    app.flash()


def _boot_file(image: Path, path: str) -> bytes:
    with FileReader(image) as io:
        table = read_partition_table(io, name=str(image))
        boot = open_boot_partition(io, table, name=str(image))
        return boot_filesystem(io, boot, name=str(image)).read_file(path)


def test_flash_to_a_file_gives_a_verified_result(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    target = tmp_path / "card.img"
    _flash_wifi_image(app, target)
    assert app.controller.state is FlashState.DONE
    card = app.window.progress_page.cards[str(target)]
    assert card.status.text().startswith("Done")
    assert card.status.text().endswith("· verified")
    assert app.window.progress_page.title.text() == "Done"
    result = app.controller.job.targets[str(target)].result  # type: ignore[union-attr]
    assert result is not None and result.ok and result.verified


def test_flashed_file_holds_the_configured_boot_partition(
    make_app: MakeApp, tmp_path: Path
) -> None:
    app = make_app()
    target = tmp_path / "card.img"
    _flash_wifi_image(app, target)
    info = inspect_image(target)
    assert info.identity.device_type == "raspberrypi4-64"
    assert info.config is not None and info.config["deviceType"] == "raspberrypi4-64"
    assert WIFI_KEYFILE_NAME in info.keyfiles
    config = json.loads(_boot_file(target, "/config.json"))
    assert config["deviceType"] == "raspberrypi4-64"
    keyfile = _boot_file(target, f"/system-connections/{WIFI_KEYFILE_NAME}").decode()
    assert "ssid=Lab" in keyfile
    assert "psk=correct-horse" in keyfile


def test_last_choices_are_saved_without_the_wifi_key(
    make_app: MakeApp, tmp_path: Path, config_dir: Path
) -> None:
    app = make_app()
    _flash_wifi_image(app, tmp_path / "card.img")
    saved = json.loads((config_dir / "settings.json").read_text())
    assert (saved["device_type"], saved["network"], saved["wifi_ssid"]) == (
        "raspberrypi4-64",
        "wifi",
        "Lab",
    )
    assert saved["wifi_key"] is None


def test_event_loop_keeps_ticking_while_flashing(
    make_app: MakeApp, tmp_path: Path, big_image: Path
) -> None:
    """A 1 GiB image written whole takes a good part of a second: a 5 ms timer keeps firing
    throughout (a blocked event loop would serve it a handful of times at most)."""
    app = make_app()
    app.open_image_file(big_image)
    app.next()
    app.to_targets()
    app.click(app.window.targets_page.write_all_check)
    app.add_file_target(tmp_path / "card.img")
    ticks_while_flashing: list[FlashState] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(
        lambda: app.controller.flashing and ticks_while_flashing.append(app.controller.state)
    )
    timer.start()
    started = time.monotonic()
    app.flash()
    seconds = time.monotonic() - started
    timer.stop()
    assert len(ticks_while_flashing) >= 20, f"{len(ticks_while_flashing)} ticks in {seconds:.2f} s"


def test_a_compressed_image_is_obtained_once_by_the_flash(
    make_app: MakeApp,
    tmp_path: Path,
    mbr_image: ImageFactory,
    compressed_image: Callable[[Path, str], Path],
) -> None:
    """The flash obtains its image once: it no longer obtains it whole first (to check the
    drives' sizes) and then again inside the flash, which logged the unpacking twice."""
    image = mbr_image(device_type="raspberrypi4-64", os_version="5.3.21")
    app = make_app()
    app.open_image_file(compressed_image(image.path, "gz"))
    app.next()
    app.to_targets()
    target = tmp_path / "card.img"
    app.add_file_target(target)
    app.flash()
    assert app.controller.state is FlashState.DONE
    job = app.controller.job
    assert job is not None
    assert job.log.count("[phase] job: unpacking") == 1, job.log
    report = app.controller.report
    assert report is not None and report.results[0].verified
    with open(target, "rb") as card, open(image.path, "rb") as raw:
        assert card.read(1024 * 1024) == raw.read(1024 * 1024)  # the partition table
