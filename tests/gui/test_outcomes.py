"""How flashes end, through the widgets: cancelled mid-write, one target failing while the other
succeeds (then retried), error details copied, and a real loop device written by the writer
helper when root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMessageBox

from flasher.events import Phase
from flasher.gui.dialogs import ErrorDetailsDialog
from flasher.gui.progress import FlashState
from flasher.writer.launchers import DirectLauncher
from tests.gui.conftest import MakeApp
from tests.gui.test_flow import _boot_file
from tests.support.loopdev import LoopDevices, require_loop

MiB = 1024 * 1024
# Larger than the catalog's size estimate for the default Raspberry Pi 4 release (371.5 MB).
CARD_BYTES = 512 * MiB


@pytest.fixture
def locked_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory where no file can be created: a read-only tmpfs as root (root ignores
    permission bits), a mode 0555 directory otherwise."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:
        if shutil.which("mount") is None:
            pytest.skip("mount not installed")
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64m", "tmpfs", str(folder)], check=True
        )
        yield folder
        subprocess.run(["umount", str(folder)], check=False)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def _unlock(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
    else:
        folder.chmod(0o755)


def test_one_target_fails_while_the_other_succeeds(
    make_app: MakeApp, tmp_path: Path, locked_dir: Path
) -> None:
    app = make_app()
    good, bad = tmp_path / "good.img", locked_dir / "bad.img"
    app.to_configure()
    app.to_targets()
    app.add_file_target(good)
    app.add_file_target(bad)
    app.flash()
    assert app.controller.state is FlashState.FAILED
    page = app.window.progress_page
    assert page.title.text() == "1 of 2 failed"
    assert page.cards[str(good)].status.text().endswith("· verified")
    failed = page.cards[str(bad)]
    assert failed.status.text() == "Failed"
    assert failed.error.isVisible() and f"{bad}:" in failed.error.text()
    assert "while creating" in failed.error.text()
    assert page.retry.isVisible() and failed.retry.isVisible()


def test_retry_flashes_only_the_failed_target(
    make_app: MakeApp, tmp_path: Path, locked_dir: Path
) -> None:
    app = make_app()
    good, bad = tmp_path / "good.img", locked_dir / "bad.img"
    app.to_configure()
    app.to_targets()
    app.add_file_target(good)
    app.add_file_target(bad)
    app.flash()
    first = app.controller.job.targets[str(good)].result  # type: ignore[union-attr]
    written = good.stat().st_mtime_ns
    _unlock(locked_dir)
    with app.qtbot.waitSignal(app.controller.flash_finished, timeout=30_000):
        app.click(app.window.progress_page.retry)
    assert app.controller.state is FlashState.DONE
    assert app.controller.job.targets[str(good)].result is first  # type: ignore[union-attr]
    assert good.stat().st_mtime_ns == written
    assert bad.read_bytes() == good.read_bytes()
    assert app.window.progress_page.title.text() == "Done: 2 files"


def test_failed_target_details_can_be_copied(
    make_app: MakeApp, tmp_path: Path, locked_dir: Path
) -> None:
    app = make_app()
    bad = locked_dir / "bad.img"
    app.to_configure()
    app.to_targets()
    app.add_file_target(bad)
    app.flash()
    app.click(app.window.progress_page.cards[str(bad)].details)
    app.qtbot.waitUntil(lambda: isinstance(app.window.dialog, ErrorDetailsDialog))
    dialog = app.window.dialog
    assert isinstance(dialog, ErrorDetailsDialog)
    app.click(dialog.copy)
    copied = QGuiApplication.clipboard().text()
    assert '"code": "write_failed"' in copied
    assert str(bad) in copied


def test_cancel_mid_write_leaves_the_target_unbootable(
    make_app: MakeApp, tmp_path: Path, big_image: Path
) -> None:
    app = make_app()
    target = tmp_path / "card.img"
    app.open_image_file(big_image)
    app.next()
    app.to_targets()
    app.click(app.window.targets_page.write_all_check)
    app.add_file_target(target)
    page = app.window.progress_page

    def cancel_once_writing(path: str) -> None:
        status = app.controller.job.targets[path]  # type: ignore[union-attr]
        if (
            status.phase is Phase.WRITING
            and status.done_bytes
            and page.cancel.isEnabled()
            and page.cancel_question is None
        ):
            app.click(page.cancel)
            assert page.cancel_question is not None  # a write is never stopped unasked
            app.click(page.stop_button)

    app.controller.target_changed.connect(cancel_once_writing)
    app.flash()
    assert app.controller.state is FlashState.CANCELLED
    assert page.title.text() == "Cancelled"
    assert page.cards[str(target)].status.text() == "Cancelled"
    with open(target, "rb") as f:
        head = f.read(MiB)
    assert head == bytes(len(head)), "a cancelled target must not keep a partition table"


def test_flash_to_a_loop_device_through_the_writer_helper(
    make_app: MakeApp, tmp_path: Path
) -> None:
    require_loop()
    with LoopDevices(tmp_path) as loops:
        loop = loops.create(CARD_BYTES)
        app = make_app(launcher=DirectLauncher())
        app.to_configure()
        app.type_into(app.window.configure_page.hostname_edit, "kiosk")
        app.to_targets()
        app.tick_drive(loop.path)
        app.flash()
        assert app.controller.state is FlashState.DONE
        result = app.controller.job.targets[loop.path].result  # type: ignore[union-attr]
        assert result is not None and result.ok and result.verified
        config = json.loads(_boot_file(loop.backing, "/config.json"))
        assert (config["deviceType"], config["hostname"]) == ("raspberrypi4-64", "kiosk")


def test_closing_while_flashing_asks_then_cancels_and_quits(
    make_app: MakeApp, tmp_path: Path, big_image: Path
) -> None:
    app = make_app()
    app.open_image_file(big_image)
    app.next()
    app.to_targets()
    app.click(app.window.targets_page.write_all_check)
    app.add_file_target(tmp_path / "card.img")
    asked: list[QMessageBox] = []

    def close_once_writing(path: str) -> None:
        status = app.controller.job.targets[path]  # type: ignore[union-attr]
        if status.phase is Phase.WRITING and not asked:
            assert not app.window.close()  # refused while flashing: a question comes up
            assert isinstance(app.window.dialog, QMessageBox)
            asked.append(app.window.dialog)
            app.click(app.window.dialog.button(QMessageBox.StandardButton.Yes))

    app.controller.target_changed.connect(close_once_writing)
    app.flash()
    assert asked and app.controller.state is FlashState.CANCELLED
    app.qtbot.waitUntil(lambda: not app.window.isVisible())
