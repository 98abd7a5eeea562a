"""The window from the keyboard alone: Enter moves on, Escape goes back, mnemonics reach the
controls, and the drive list ticks with the space bar."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QGroupBox, QLabel, QWidget

from flasher.gui.window import CONFIGURE, OS, TARGETS
from tests.gui.conftest import MakeApp


def test_enter_in_the_search_moves_on_and_escape_comes_back(make_app: MakeApp) -> None:
    app = make_app()
    app.choose_device_type("pi 4", "raspberrypi4-64")
    app.qtbot.keyClick(app.window.os_page.search, Qt.Key.Key_Return)
    assert app.page() == CONFIGURE
    app.qtbot.keyClick(app.window, Qt.Key.Key_Escape)
    assert app.page() == OS


def test_arrow_keys_in_the_search_move_through_the_list(make_app: MakeApp) -> None:
    app = make_app()
    app.choose_device_type("raspberry", "raspberry-pi")
    search = app.window.os_page.search
    app.qtbot.keyClick(search, Qt.Key.Key_Down)
    device = app.window.os_page.current_device_type()
    assert device is not None and device.slug == "raspberrypi3"
    assert search.hasFocus()


def test_mnemonic_picks_wifi(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    app.qtbot.keyClick(app.window, Qt.Key.Key_I, Qt.KeyboardModifier.AltModifier)
    app.qtbot.waitUntil(page.wifi_radio.isChecked)  # a mnemonic clicks after a short flash


def test_space_ticks_the_current_drive(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    app.to_configure()
    app.to_targets()
    target = tmp_path / "card.img"
    app.add_file_target(target)
    assert app.page() == TARGETS
    app.tick_drive(str(target))  # it was ticked when added: space unticks it
    assert app.controller.drives.selected == []
    assert not app.window.next.isEnabled()


def _mnemonics(root: QWidget) -> list[str]:
    letters = []
    for widget in root.findChildren(QWidget):
        if not widget.isVisibleTo(root) or not widget.isEnabled():
            continue
        text = (
            widget.title()
            if isinstance(widget, QGroupBox)
            else widget.text()
            if isinstance(widget, QAbstractButton | QLabel)
            else ""
        )
        match = re.search(r"&([^&\s])", text.replace("&&", ""))
        if match:
            letters.append(match.group(1).lower())
    return letters


def test_no_two_controls_on_a_step_share_a_mnemonic(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    app.choose_device_type("pi 4", "raspberrypi4-64")
    seen = {"os": _mnemonics(app.window)}
    app.next()
    app.click(app.window.configure_page.ip_group)
    app.click(app.window.configure_page.fleet_group)
    seen["configure"] = _mnemonics(app.window)
    app.to_targets()
    app.add_file_target(tmp_path / "card.img")
    seen["targets"] = _mnemonics(app.window)
    for step, letters in seen.items():
        assert len(letters) > 5, step
        assert len(letters) == len(set(letters)), f"{step}: {sorted(letters)}"
