"""Settings round-trip, and secrets are kept only when the user asks for it."""

from __future__ import annotations

import stat
from pathlib import Path

from flasher.settings import SETTINGS_FILE, Settings


def test_settings_round_trip(tmp_path: Path) -> None:
    s = Settings(
        device_type="raspberrypi4-64", network="wifi", wifi_ssid="Lab", dns_servers=["1.1.1.1"]
    )
    s.save(tmp_path)
    loaded = Settings.load(tmp_path)
    assert loaded.device_type == "raspberrypi4-64"
    assert loaded.wifi_ssid == "Lab"
    assert loaded.dns_servers == ["1.1.1.1"]


def test_secrets_are_not_saved_by_default(tmp_path: Path) -> None:
    Settings(wifi_key="s3cretpass", provisioning_key="pk").save(tmp_path)
    text = (tmp_path / SETTINGS_FILE).read_text()
    assert "s3cretpass" not in text
    assert Settings.load(tmp_path).wifi_key is None


def test_secrets_are_saved_when_asked_in_a_private_file(tmp_path: Path) -> None:
    path = Settings(wifi_key="s3cretpass", remember_secrets=True).save(tmp_path)
    assert Settings.load(tmp_path).wifi_key == "s3cretpass"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_repr_never_shows_secrets() -> None:
    assert "s3cretpass" not in repr(Settings(wifi_key="s3cretpass", remember_secrets=True))


def test_corrupt_settings_file_gives_defaults(tmp_path: Path) -> None:
    (tmp_path / SETTINGS_FILE).write_text("{not json")
    assert Settings.load(tmp_path) == Settings()
