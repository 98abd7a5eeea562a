"""Never a silently open Wi-Fi card: a remembered network name without its key asks for the key
(or for "Open network") before Next, and Next is never enabled while it would refuse — the
window always says why."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from flasher.gui.window import CONFIGURE, TARGETS
from flasher.image.network import WIFI_KEYFILE_NAME
from flasher.models import NetworkKind
from flasher.settings import Settings
from tests.gui.conftest import MakeApp
from tests.gui.test_flow import _boot_file


def _remembered_ssid_only() -> Settings:
    """What a relaunch restores when "remember the keys" was off: the SSID, not the key."""
    settings = Settings()
    settings.network = NetworkKind.WIFI.value
    settings.wifi_ssid = "Workshop"
    settings.device_type = "raspberrypi4-64"
    return settings


def test_restored_ssid_without_its_key_asks_for_the_key(make_app: MakeApp) -> None:
    app = make_app(settings=_remembered_ssid_only())
    app.to_configure()
    page = app.window.configure_page
    assert page.key_error.isVisible()
    assert "“Workshop” was not remembered" in page.key_error.text()
    assert not app.window.next.isEnabled()
    assert "was not remembered" in app.window.why.text()


def test_next_stays_on_configure_while_the_key_is_missing(make_app: MakeApp) -> None:
    app = make_app(settings=_remembered_ssid_only())
    app.to_configure()
    app.qtbot.keyClick(app.window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert app.page() == CONFIGURE


def test_typing_the_key_enables_next(make_app: MakeApp) -> None:
    app = make_app(settings=_remembered_ssid_only())
    app.to_configure()
    page = app.window.configure_page
    app.type_into(page.key_edit, "correct-horse")
    assert app.window.next.isEnabled() and not app.window.why.isVisible()
    app.to_targets()
    config = app.controller.config
    assert config is not None and config.network.wifi_key is not None
    assert not config.network.open_network


def test_open_network_is_a_choice_the_user_makes(make_app: MakeApp) -> None:
    app = make_app(settings=_remembered_ssid_only())
    app.to_configure()
    page = app.window.configure_page
    app.click(page.open_check)
    assert not page.key_edit.isEnabled() and not page.key_error.isVisible()
    app.to_targets()
    config = app.controller.config
    assert config is not None and config.network.open_network
    assert config.network.wifi_key is None


def test_card_flashed_open_only_after_the_choice(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app(settings=_remembered_ssid_only())
    app.to_configure()
    app.click(app.window.configure_page.open_check)
    app.to_targets()
    card = tmp_path / "open.img"
    app.add_file_target(card)
    app.flash()
    keyfile = _boot_file(card, f"/system-connections/{WIFI_KEYFILE_NAME}").decode()
    assert "ssid=Workshop" in keyfile
    assert "psk=" not in keyfile


def test_new_wifi_network_without_key_disables_next_and_says_why(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    app.use_wifi("Lab", "")
    assert not app.window.next.isEnabled()
    assert "Open network" in app.window.why.text()


def test_fleet_without_provisioning_key_disables_next_and_says_why(make_app: MakeApp) -> None:
    app = make_app()
    app.to_configure()
    page = app.window.configure_page
    page.fleet_group.setChecked(True)
    app.type_into(page.fleet_edit, "1234")
    assert not app.window.next.isEnabled()
    assert "provisioning key is required" in app.window.why.text()
    app.type_into(page.provisioning_edit, "abcdef0123")
    assert app.window.next.isEnabled()
    app.to_targets()
    assert app.page() == TARGETS


def test_the_summary_says_the_network_is_open(make_app: MakeApp) -> None:
    app = make_app(settings=_remembered_ssid_only())
    app.to_configure()
    app.click(app.window.configure_page.open_check)
    assert "open Wi-Fi “Workshop”" in app.window.summary.text()
