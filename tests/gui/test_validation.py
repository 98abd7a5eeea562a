"""Inline validation on the Configure page: the core's rules, shown under the field being
edited, and Next refusing to move on while any field is wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from flasher.gui.pages.configure_page import ConfigurePage
from flasher.gui.widgets import FieldError
from flasher.gui.window import CONFIGURE
from tests.gui.conftest import MakeApp
from tests.gui.driving import App

Edit = Callable[[App, ConfigurePage], None]


def _wifi(ssid: str, key: str = "") -> Edit:
    return lambda app, page: app.use_wifi(ssid, key)


def _static(address: str, netmask: str = "24", gateway: str = "192.168.1.1", dns: str = "") -> Edit:
    def edit(app: App, page: ConfigurePage) -> None:
        page.ip_group.setChecked(True)
        for field, text in (
            (page.address_edit, address),
            (page.netmask_edit, netmask),
            (page.gateway_edit, gateway),
            (page.dns_edit, dns),
        ):
            field.clear()
            app.type_into(field, text)

    return edit


def _poll(minutes: str) -> Edit:
    def edit(app: App, page: ConfigurePage) -> None:
        page.poll_spin.lineEdit().selectAll()
        app.type_into(page.poll_spin, minutes)

    return edit


def _hostname(name: str) -> Edit:
    return lambda app, page: app.type_into(page.hostname_edit, name)


CASES = [
    ("ssid_too_long", _wifi("x" * 33, "correct-horse"), "ssid_error", "at most 32 bytes"),
    ("key_too_short", _wifi("Lab", "short"), "key_error", "has 5 characters"),
    ("key_not_ascii", _wifi("Lab", "pässwörd1"), "key_error", "printable ASCII"),
    ("address_not_ipv4", _static("300.1.1.1"), "address_error", "not an IPv4 address"),
    (
        "netmask_not_contiguous",
        _static("192.168.1.50", "255.0.255.0"),
        "netmask_error",
        "not a netmask",
    ),
    (
        "gateway_outside_subnet",
        _static("192.168.1.50", "24", "10.0.0.1"),
        "gateway_error",
        "outside the device's subnet",
    ),
    (
        "dns_not_ipv4",
        _static("192.168.1.50", "24", "192.168.1.1", "1.1.1.1, dns.example"),
        "dns_error",
        "not an IPv4 address",
    ),
    ("poll_too_short", _poll("5"), "poll_error", "must be 10-1440 minutes"),
    ("poll_too_long", _poll("2000"), "poll_error", "must be 10-1440 minutes"),
    ("hostname_uppercase", _hostname("Kiosk"), "hostname_error", "must be lowercase"),
    ("hostname_dotted", _hostname("kiosk.local"), "hostname_error", "without dots"),
]


@pytest.mark.parametrize(
    ("edit", "error_name", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_value_shows_its_rule_under_the_field(
    make_app: MakeApp, edit: Edit, error_name: str, expected: str
) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    edit(app, page)
    error: FieldError = getattr(page, error_name)
    app.qtbot.waitUntil(error.isVisible)
    assert expected in error.text()
    assert not app.window.next.isEnabled()


def test_untouched_required_field_stays_quiet_until_next(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    app.click(page.wifi_radio)
    assert not page.ssid_error.isVisible()
    app.qtbot.keyClick(app.window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert page.ssid_error.isVisible()
    assert "is required" in page.ssid_error.text()
    assert app.page() == CONFIGURE


def test_fixing_the_value_clears_the_error(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    app.type_into(page.hostname_edit, "Kiosk")
    app.qtbot.waitUntil(page.hostname_error.isVisible)
    page.hostname_edit.clear()
    app.type_into(page.hostname_edit, "kiosk")
    assert not page.hostname_error.isVisible()
    assert app.window.next.isEnabled()


def test_provisioning_key_without_a_fleet_id_is_refused(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    page.fleet_group.setChecked(True)
    app.type_into(page.fleet_edit, "fleet-one")
    app.qtbot.waitUntil(page.fleet_error.isVisible)
    assert "numeric ID" in page.fleet_error.text()


def _add_connection_file(app: App, path: Path) -> None:
    page = app.window.configure_page
    app.click(page.add_keyfile)
    dialog = app.file_dialog(page, "keyfile-dialog")
    dialog.selectFile(str(path))
    dialog.accept()


def test_connection_file_is_added_to_the_settings(make_app: MakeApp, tmp_path: Path) -> None:
    keyfile = tmp_path / "lab-ethernet"
    keyfile.write_text("[connection]\nid=lab\ntype=ethernet\n")
    app = make_app()
    app.to_configure()
    _add_connection_file(app, keyfile)
    page = app.window.configure_page
    app.qtbot.waitUntil(lambda: page.keyfile_list.count() == 1)
    config = page.config()
    assert config is not None
    assert [(k.name, k.content) for k in config.extra_keyfiles] == [
        ("lab-ethernet", keyfile.read_bytes())
    ]


def test_bad_connection_file_is_named_under_the_list(make_app: MakeApp, tmp_path: Path) -> None:
    keyfile = tmp_path / "lab"
    keyfile.write_text("[connection]\nid=lab\n")
    app = make_app()
    app.to_configure()
    _add_connection_file(app, keyfile)
    page = app.window.configure_page
    app.qtbot.waitUntil(page.keyfile_error.isVisible)
    assert page.keyfile_error.text() == "lab: [connection] has no 'type'."
    assert not app.window.next.isEnabled()


def test_an_empty_key_without_open_network_ticked_is_refused_at_next(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    app.use_wifi("Lab", "")
    app.qtbot.keyClick(app.window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert page.key_error.isVisible()
    assert "is required" in page.key_error.text()
    assert app.page() == CONFIGURE


def test_an_empty_key_with_open_network_ticked_is_an_open_network(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    app.use_wifi("Lab", "")
    app.click(page.open_check)
    config = page.config()
    assert config is not None
    assert (config.network.wifi_key, config.network.open_network) == (None, True)
