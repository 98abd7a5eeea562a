"""What Etcher and Imager users expect, through the window: an image file or URL dropped on it
opens, overall progress and the state in the title, a log after a success too, the window's
size remembered, and a notification after a long flash."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QSize, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QIcon
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from flasher.events import Phase
from flasher.gui.dialogs import ErrorDetailsDialog
from flasher.gui.notify import notification_command, notify_finished
from flasher.gui.progress import FlashState
from flasher.gui.qtmodels import device_family
from flasher.gui.window import OS
from flasher.models import DeviceType
from tests.conftest import ImageFactory
from tests.gui.conftest import MakeApp
from tests.gui.driving import FLASH_TIMEOUT_MS, App
from tests.support.envspy import environment_spy
from tests.support.httpserver import HttpTestServer


def _drop(app: App, mime: QMimeData) -> bool:
    """Drag `mime` over the window and drop it; True when the window took it."""
    window = app.window
    where = QPoint(window.width() // 2, window.height() // 2)
    enter = QDragEnterEvent(
        where, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier(0)
    )
    QApplication.sendEvent(window, enter)
    if not enter.isAccepted():
        return False
    drop = QDropEvent(
        where, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier(0)
    )
    QApplication.sendEvent(window, drop)
    return drop.isAccepted()


def test_a_dropped_image_file_opens(
    make_app: MakeApp, tmp_path: Path, mbr_image: ImageFactory
) -> None:
    app = make_app()
    image = mbr_image().path
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(image))])
    assert _drop(app, mime)
    page = app.window.os_page
    assert app.page() == OS and page.file_radio.isChecked()
    app.qtbot.waitUntil(lambda: page.selection() is not None, timeout=FLASH_TIMEOUT_MS)
    assert page.path_edit.text() == str(image)


def test_a_typed_image_path_opens_when_the_field_is_left(
    make_app: MakeApp, mbr_image: ImageFactory
) -> None:
    """Typing a path and moving on (Tab, or a click elsewhere) opens it; Enter is not needed."""
    app = make_app()
    image = mbr_image().path
    page = app.window.os_page
    app.click(page.file_radio)
    app.window.activateWindow()
    app.qtbot.waitUntil(app.window.isActiveWindow)
    app.type_into(page.path_edit, str(image))
    assert page.path_edit.hasFocus() and page.selection() is None
    app.qtbot.keyClick(page.path_edit, Qt.Key.Key_Tab)
    app.qtbot.waitUntil(lambda: page.selection() is not None, timeout=FLASH_TIMEOUT_MS)
    assert not page.path_edit.hasFocus()
    assert page.file_status.text()


def test_a_dropped_link_goes_to_the_url_panel(make_app: MakeApp) -> None:
    app = make_app()
    mime = QMimeData()
    mime.setText("https://example.invalid/balena.img.zip")
    assert _drop(app, mime)
    page = app.window.os_page
    assert page.url_radio.isChecked()
    assert page.url_edit.text() == "https://example.invalid/balena.img.zip"


@pytest.mark.parametrize("text", ["just some words", "ftp://example.invalid/x.img", ""])
def test_dropped_text_that_is_no_image_link_is_refused(make_app: MakeApp, text: str) -> None:
    app = make_app()
    mime = QMimeData()
    mime.setText(text)
    assert not _drop(app, mime)
    assert app.window.os_page.catalog_radio.isChecked()


def test_overall_progress_and_the_title_follow_the_write(
    make_app: MakeApp, tmp_path: Path, big_image: Path
) -> None:
    app = make_app()
    app.open_image_file(big_image)
    app.next()
    app.to_targets()
    app.click(app.window.targets_page.write_all_check)
    app.add_file_target(tmp_path / "card.img")
    page = app.window.progress_page
    seen: list[tuple[str, bool]] = []

    def watch(path: str) -> None:
        status = app.controller.job.targets[path]  # type: ignore[union-attr]
        if status.phase is Phase.WRITING and status.done_bytes:
            seen.append((app.window.windowTitle(), page.overall_bar.isVisible()))

    app.controller.target_changed.connect(watch)
    app.flash(timeout_ms=120_000)
    assert seen
    title, bar_shown = seen[-1]
    assert re.fullmatch(r"\d+% writing — Sandbox — Flasher", title) and bar_shown
    assert app.window.windowTitle() == "Done — Sandbox — Flasher"
    line = page.overall_label.text()
    assert re.search(r"[kMG]?B written( at [\d.]+ [kMG]?B/s average)? · flashed in \d+ s", line)


def test_flash_another_takes_the_finished_state_out_of_the_title(
    make_app: MakeApp, tmp_path: Path
) -> None:
    app = make_app()
    at_start = app.window.windowTitle()
    assert at_start == "Sandbox — Flasher"  # ends in the app name: X11 adds no second one
    app.to_configure()
    app.to_targets()
    app.add_file_target(tmp_path / "card.img")
    app.flash()
    assert app.window.windowTitle() == "Done — Sandbox — Flasher"
    app.click(app.window.progress_page.again)
    assert app.window.stack.currentWidget() is app.window.os_page
    assert app.window.windowTitle() == at_start


def test_the_log_can_be_seen_after_a_success(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    app.to_configure()
    app.to_targets()
    app.add_file_target(tmp_path / "card.img")
    app.flash()
    assert app.controller.state is FlashState.DONE
    page = app.window.progress_page
    app.click(page.log_button)
    dialog = app.window.dialog
    assert isinstance(dialog, ErrorDetailsDialog)
    assert dialog.windowTitle() == "Log"
    text = dialog.details.toPlainText()
    assert "[phase] job: configuring" in text
    assert f"card.img ({tmp_path / 'card.img'}): Done" in text


def test_the_window_size_is_remembered(make_app: MakeApp) -> None:
    first = make_app()
    wanted = first.window.minimumSize() + QSize(37, 23)
    first.window.resize(wanted)
    assert first.window.close()
    second = make_app()
    assert second.window.size() == wanted


def test_notify_send_is_preferred_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tmp_path / "notify-send"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    command = notification_command("Done: 2 drives", "balenaOS 6.5")
    assert command is not None and command[0] == "notify-send"
    assert command[-2:] == ["Done: 2 drives", "balenaOS 6.5"]


def test_a_long_flash_notifies_without_passing_the_apps_secrets_on(
    make_app: MakeApp, qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = environment_spy(tmp_path, "notify-send", monkeypatch)
    monkeypatch.setenv("FLASHER_WIFI_KEY", "wifi-k3y-1")
    monkeypatch.setenv("FLASHER_PROVISIONING_KEY", "prov-k3y-2")
    app = make_app()
    app.window.showMinimized()
    assert not app.window.isActiveWindow()
    assert notify_finished(app.window, "Done: 1 drive", "balenaOS", elapsed_s=60.0)
    qtbot.waitUntil(seen.exists, timeout=5000)
    environment = seen.read_text()
    assert f"PATH={tmp_path}" in environment
    assert "wifi-k3y-1" not in environment and "prov-k3y-2" not in environment


def test_a_short_flash_calls_nobody_back(make_app: MakeApp) -> None:
    app = make_app()
    assert not notify_finished(app.window, "Done", "", elapsed_s=3.0)


def test_a_url_download_shows_its_progress_and_resumes_after_stop(
    make_app: MakeApp, mbr_image: ImageFactory
) -> None:
    image = mbr_image().path.read_bytes()
    app = make_app()
    page = app.window.os_page
    with HttpTestServer() as server:
        url = server.serve("/card.img", image, send_delay_s=0.02)
        app.click(page.url_radio)
        app.type_into(page.url_edit, url)
        app.click(page.url_open)
        app.qtbot.waitUntil(
            lambda: re.match(r"Downloading · .* of .*", page.url_status.text()) is not None,
            timeout=FLASH_TIMEOUT_MS,
        )
        assert page.url_cancel.isVisible() and not page.url_open.isVisible()
        app.click(page.url_cancel)
        assert page.url_status.text().startswith("Stopped.")
        assert page.selection() is None and page.url_open.isVisible()
        server.serve("/card.img", image)
        app.click(page.url_open)
        app.qtbot.waitUntil(lambda: page.selection() is not None, timeout=FLASH_TIMEOUT_MS)
        resumed = server.requests_for("/card.img")[-1]
    assert resumed.headers.get("Range", "").startswith("bytes=")


@pytest.mark.parametrize(
    ("slug", "name", "arch", "family"),
    [
        ("raspberrypi4-64", "Raspberry Pi 4 (using 64bit OS)", "aarch64", "raspberrypi"),
        ("fincm3", "Balena Fin (CM3)", "armv7hf", "raspberrypi"),
        ("intel-nuc", "Intel NUC", "amd64", "pc"),
        ("generic-amd64", "Generic x86_64 (GPT)", "amd64", "pc"),
        ("beaglebone-black", "BeagleBone Black", "armv7hf", "board"),
        ("generic-aarch64", "Generic AARCH64", "aarch64", "board"),
    ],
)
def test_device_families(slug: str, name: str, arch: str, family: str) -> None:
    assert device_family(DeviceType(slug, name, arch)) == family


def test_every_device_type_in_the_list_has_a_picture(make_app: MakeApp) -> None:
    app = make_app()
    model = app.controller.device_types
    app.qtbot.waitUntil(lambda: model.rowCount() > 0, timeout=FLASH_TIMEOUT_MS)
    for row in range(model.rowCount()):
        picture = model.data(model.index(row, 0), Qt.ItemDataRole.DecorationRole)
        assert isinstance(picture, QIcon) and not picture.isNull()


def test_steps_past_a_page_that_cannot_be_left_cannot_be_clicked(
    make_app: MakeApp, tmp_path: Path
) -> None:
    app = make_app()
    app.to_configure()
    app.to_targets()
    app.add_file_target(tmp_path / "card.img")
    app.flash()
    app.click(app.window.progress_page.again)
    steps = app.window.steps.buttons
    assert [b.isEnabled() for b in steps] == [True, True, True]  # the choice is still whole
    app.click(app.window.os_page.file_radio)  # no image file chosen yet
    assert [b.isEnabled() for b in steps] == [True, False, False]
    assert [b.isChecked() for b in steps] == [True, False, False]
    app.click(app.window.os_page.catalog_radio)
    assert [b.isEnabled() for b in steps] == [True, True, True]
