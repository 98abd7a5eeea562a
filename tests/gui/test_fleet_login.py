"""A fleet without a provisioning key, through the widgets: without a saved login Next stays
disabled and says what is missing; with one, the page offers the login instead and the flashed
card holds the fleet's config.json made by the balena API (with a key it minted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flasher.cache import ImageCache
from flasher.sandbox.server import SandboxServer
from tests.gui.conftest import MakeApp
from tests.gui.driving import App
from tests.gui.test_flow import _boot_file

FLEET = 1958513  # a fleet of the sandbox's user


def _fleet_without_key(app: App) -> None:
    app.to_configure("pi 4", "raspberrypi4-64")
    page = app.window.configure_page
    app.click(page.ethernet_radio)
    page.fleet_group.setChecked(True)
    app.type_into(page.fleet_edit, str(FLEET))


def test_without_a_login_next_says_the_key_is_missing(make_app: MakeApp) -> None:
    app = make_app()
    _fleet_without_key(app)
    assert not app.window.configure_page.login_check.isVisibleTo(app.window)
    assert not app.window.next.isEnabled()
    why = app.window.next_blocker()
    assert why is not None and "provisioning key" in why.lower() and "log in" in why


def test_with_a_login_the_page_offers_it_and_next_is_enabled(make_app: MakeApp) -> None:
    app = make_app(sandbox_login=True)
    _fleet_without_key(app)
    page = app.window.configure_page
    assert page.login_check.isVisible() and page.login_check.isChecked()
    assert not page.provisioning_edit.isEnabled()
    assert app.window.next.isEnabled()


def test_unticking_the_login_asks_for_the_key_again(make_app: MakeApp) -> None:
    app = make_app(sandbox_login=True)
    _fleet_without_key(app)
    page = app.window.configure_page
    app.click(page.login_check)
    assert page.provisioning_edit.isEnabled()
    assert not app.window.next.isEnabled()
    why = app.window.next_blocker()
    assert why is not None and "Use my balena login instead" in why


def test_flash_with_the_login_writes_the_apis_fleet_config(
    make_app: MakeApp, sandbox: SandboxServer, tmp_path: Path
) -> None:
    app = make_app(sandbox_login=True)
    _fleet_without_key(app)
    app.to_targets()
    target = tmp_path / "card.img"
    app.add_file_target(target)
    app.flash()
    assert app.window.progress_page.title.text() == "Done"
    config = json.loads(_boot_file(target, "/config.json"))
    assert config["applicationId"] == FLEET
    assert sandbox.api.issued_keys.get(config["apiKey"]) == FLEET


@pytest.mark.parametrize(
    ("api_key", "api_url", "expected"),
    [
        ("k3y", None, True),  # balenaCloud's API with a key: logged in
        (None, None, False),  # no login saved
        ("k3y", "https://api.example.invalid", False),  # the login is not for that API
    ],
)
def test_the_login_is_offered_only_when_one_is_saved_for_that_api(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    api_key: str | None,
    api_url: str | None,
    expected: bool,
) -> None:
    from flasher.gui.app import build_services

    for name in ("BALENA_API_KEY", "BALENA_TOKEN", "FLASHER_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no saved login, no .balenarc.yml
    monkeypatch.setenv("BALENARC_DATA_DIRECTORY", str(tmp_path / "balenarc"))
    monkeypatch.delenv("BALENARC_BALENA_URL", raising=False)
    if api_key is not None:
        monkeypatch.setenv("BALENA_API_KEY", api_key)
    backend = build_services(
        api_url=api_url, config_dir=tmp_path / "config", cache=ImageCache(tmp_path / "cache")
    )
    assert backend.services.has_login is expected
