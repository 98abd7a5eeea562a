"""Inline errors that wrap to two lines do not move the fields below them: each error has two
lines reserved under its field, shown or not, and a longer one keeps its whole text as a
tooltip."""

from __future__ import annotations

from tests.gui.conftest import MakeApp


def test_a_wrapping_error_leaves_the_next_field_in_place(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    app.click(page.wifi_radio)
    app.type_into(page.ssid_edit, "Lab")
    below = page.open_check.mapTo(page, page.open_check.rect().topLeft()).y()
    page.key_edit.setFocus()
    app.type_into(page.key_edit, "x")
    page.key_edit.clear()  # an empty key: the longest rule of the form
    app.qtbot.waitUntil(page.key_error.isVisible)
    line_px = page.key_error.fontMetrics().lineSpacing()
    app.qtbot.waitUntil(lambda: page.key_error.height() > 1.5 * line_px)  # it wrapped
    assert page.open_check.mapTo(page, page.open_check.rect().topLeft()).y() == below


def test_an_error_keeps_its_whole_text_as_a_tooltip(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    app.type_into(page.hostname_edit, "Kiosk")
    app.qtbot.waitUntil(page.hostname_error.isVisible)
    assert page.hostname_error.toolTip() == page.hostname_error.text() != ""
