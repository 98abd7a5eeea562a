"""User settings (last choices) stored as JSON under the platform's config directory.

Injected, never global: faces load a `Settings` and pass it down. Secrets are saved only when the
user asked for it (`remember_secrets`), and then in a file readable by the user alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

SETTINGS_FILE = "settings.json"


def default_config_dir() -> Path:
    override = os.environ.get("FLASHER_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir("flasher"))


@dataclass
class Settings:
    device_type: str | None = None
    os_version: str | None = None
    os_line: str = "default"
    development_mode: bool = False
    network: str = "ethernet"
    wifi_ssid: str | None = None
    wifi_hidden: bool = False
    static_ip: bool = False
    ip_address: str | None = None
    ip_netmask: str | None = None
    ip_gateway: str | None = None
    dns_servers: list[str] = field(default_factory=list)
    poll_interval_min: int | None = None
    hostname: str | None = None
    fleet_id: int | None = None
    last_image_path: str | None = None
    verify: bool = True
    remember_secrets: bool = False
    wifi_key: str | None = None
    provisioning_key: str | None = None

    @classmethod
    def load(cls, directory: Path | None = None) -> Settings:
        """Read the saved settings; a missing or unreadable file gives the defaults."""
        path = (directory or default_config_dir()) / SETTINGS_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        if not isinstance(raw, dict):
            return cls()
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
        settings = cls()
        for key, value in values.items():
            setattr(settings, key, value)
        if not settings.remember_secrets:
            settings.wifi_key = None
            settings.provisioning_key = None
        return settings

    def save(self, directory: Path | None = None) -> Path:
        """Write atomically with mode 0600; secrets are dropped unless remember_secrets is set."""
        folder = directory or default_config_dir()
        folder.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        if not self.remember_secrets:
            data["wifi_key"] = None
            data["provisioning_key"] = None
        path = folder / SETTINGS_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
        return path

    def __repr__(self) -> str:
        shown = {k: v for k, v in asdict(self).items() if k not in ("wifi_key", "provisioning_key")}
        return f"Settings({shown})"
