"""Every card on its own, through the window: a drive that fails its checks fails alone with its
own message (sizes in MB under 1 GB) while the others are written; each card's Retry retries
that card; the Targets page marks drives too small for a catalog image and refuses a file
target in a folder that does not exist."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from flasher.balena.os_model import OsModel
from flasher.errors import CatalogError
from flasher.gui.progress import FlashState
from flasher.gui.qtmodels import DriveRow, ValueRole
from flasher.writer.launchers import DirectLauncher
from tests.gui.conftest import MakeApp
from tests.gui.driving import CATALOG_TIMEOUT_MS, App
from tests.gui.test_outcomes import _unlock, locked_dir  # noqa: F401  (a fixture)
from tests.support.loopdev import LoopDevices, require_loop

MiB = 1024 * 1024
CARD_BYTES = 256 * MiB
SMALL_BYTES = 1 * MiB


def _row(app: App, path: str) -> DriveRow:
    app.qtbot.waitUntil(lambda: app.controller.drives.row_of(path) >= 0, timeout=CATALOG_TIMEOUT_MS)
    return app.controller.drives.item(app.controller.drives.row_of(path))


@pytest.fixture
def no_size_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API has no size estimate for the version (it answers 404 for some releases; the
    sandbox knows every size), so the Targets page cannot judge the drives before the flash."""

    def unknown(self: OsModel, device_type: str, version: str = "latest") -> int:
        raise CatalogError(f"No download size known for {device_type} {version}.")

    monkeypatch.setattr(OsModel, "get_download_size", unknown)


def test_drive_too_small_for_a_catalog_image_is_marked(make_app: MakeApp, tmp_path: Path) -> None:
    require_loop()
    with LoopDevices(tmp_path) as loops:
        small = loops.create(SMALL_BYTES)
        app = make_app(launcher=DirectLauncher())
        app.choose_device_type("raspberrypi4-64", "raspberrypi4-64")
        page = app.window.os_page
        app.qtbot.waitUntil(lambda: page.size_label.text().startswith("about"))
        app.next()
        app.to_targets()
        row = _row(app, small.path)
        assert row.blocked
        model = app.controller.drives
        index = model.index(model.row_of(small.path), 3)
        assert model.data(index) == "too small"
        tooltip = model.data(index, Qt.ItemDataRole.ToolTipRole)
        assert f"{small.path} is too small: 1 MB for a " in tooltip
        assert " MB image." in tooltip
        assert model.data(model.index(model.row_of(small.path), 0), ValueRole) == row


@pytest.mark.usefixtures("no_size_estimate")
def test_one_too_small_drive_fails_alone_and_the_others_are_written(
    make_app: MakeApp, tmp_path: Path
) -> None:
    require_loop()
    with LoopDevices(tmp_path) as loops:
        cards = [loops.create(CARD_BYTES) for _ in range(3)]
        small = loops.create(SMALL_BYTES)
        app = make_app(launcher=DirectLauncher())
        app.choose_device_type("raspberrypi4-64", "raspberrypi4-64")
        size_label = app.window.os_page.size_label
        app.qtbot.waitUntil(lambda: size_label.text() == "size unknown")
        app.next()
        app.to_targets()
        for loop in (*cards, small):
            app.tick_drive(loop.path)
        app.flash()
        page = app.window.progress_page
        assert app.controller.state is FlashState.FAILED
        assert page.title.text() == "1 of 4 failed"
        for loop in cards:
            assert page.cards[loop.path].status.text().startswith("Done")
        failed = page.cards[small.path]
        assert failed.status.text() == "Failed"
        assert failed.error.text().startswith(f"{small.path} is too small: 1 MB for a ")
        assert "GB" not in failed.error.text()
        assert failed.retry.isVisible() and page.retry.isVisible()


def test_a_cards_retry_retries_only_that_card(
    make_app: MakeApp,
    tmp_path: Path,
    locked_dir: Path,  # noqa: F811
) -> None:
    app = make_app()
    first, second = locked_dir / "first.img", locked_dir / "second.img"
    app.to_configure()
    app.to_targets()
    app.add_file_target(first)
    app.add_file_target(second)
    app.flash()
    page = app.window.progress_page
    assert page.title.text() == "Flashing failed"
    _unlock(locked_dir)
    with app.qtbot.waitSignal(app.controller.flash_finished, timeout=30_000):
        app.click(page.cards[str(first)].retry)
    assert page.cards[str(first)].status.text().startswith("Done")
    assert page.cards[str(second)].status.text() == "Failed"
    assert not second.exists()
    assert page.title.text() == "1 of 2 failed"


def test_retry_failed_retries_every_failed_card(
    make_app: MakeApp,
    tmp_path: Path,
    locked_dir: Path,  # noqa: F811
) -> None:
    app = make_app()
    first, second = locked_dir / "first.img", locked_dir / "second.img"
    app.to_configure()
    app.to_targets()
    app.add_file_target(first)
    app.add_file_target(second)
    app.flash()
    _unlock(locked_dir)
    page = app.window.progress_page
    with app.qtbot.waitSignal(app.controller.flash_finished, timeout=30_000):
        app.click(page.retry)
    assert app.controller.state is FlashState.DONE
    assert first.read_bytes() == second.read_bytes()


def test_file_target_in_a_missing_folder_is_refused_on_the_targets_page(
    make_app: MakeApp, tmp_path: Path
) -> None:
    app = make_app()
    app.to_configure()
    app.to_targets()
    page = app.window.targets_page
    app.click(page.save_file)
    dialog = app.file_dialog(page, "target-file-dialog")
    missing = tmp_path / "no-such-folder" / "card.img"
    dialog.selectFile(str(missing))
    dialog.accept()
    app.qtbot.waitUntil(page.banner.isVisible)
    assert "does not exist" in page.banner.message.text()
    assert app.controller.drives.row_of(str(missing)) < 0
    assert not app.window.next.isEnabled()


def test_a_size_that_arrives_after_next_still_marks_small_drives(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's size answer can come after the user moved on; the drive list learns it then."""
    require_loop()
    gate = threading.Event()
    answer = OsModel.get_download_size

    def late(self: OsModel, device_type: str, version: str = "latest") -> int:
        gate.wait(CATALOG_TIMEOUT_MS / 1000)
        return answer(self, device_type, version)

    monkeypatch.setattr(OsModel, "get_download_size", late)
    with LoopDevices(tmp_path) as loops:
        small = loops.create(SMALL_BYTES)
        app = make_app(launcher=DirectLauncher())
        app.to_configure()
        app.to_targets()
        assert not _row(app, small.path).blocked
        gate.set()
        app.qtbot.waitUntil(lambda: _row(app, small.path).blocked, timeout=CATALOG_TIMEOUT_MS)
