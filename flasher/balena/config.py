"""config.json for balenaOS: generated locally with the keys and units balena's generators use,
serialised deterministically, redacted for display, and loaded from a user's file.

Core: no printing. Imports the standard library, flasher.errors and flasher.models only.

What goes in (`render_config_json`):
* No fleet and no base: the shape of a fresh image's config.json, `deviceType` and
  `persistentLogging`, plus `appUpdatePollInterval`, `hostname` and `developmentMode` only when
  asked for. An unmanaged device never polls, so no default interval is invented.
* A fleet (`fleet_id` + `provisioning_key`), no base: the keys `POST /download-config` returns,
  in its order (applicationId, deviceType, appUpdatePollInterval, listenPort, vpnPort,
  apiEndpoint, vpnEndpoint, registryEndpoint, deltaEndpoint, apiKey, developmentMode), then
  hostname, and persistentLogging when on. `userId` and `mixpanelToken` are left out: they
  name the user and an analytics project, and provisioning needs neither. The poll interval
  defaults to 10 minutes (600000 ms), as the balena CLI sends when none is given.
* A base (`--config FILE` or the API's config): its keys and order are kept, explicit settings
  overwrite values in place, and missing fleet keys are appended. The booleans only switch
  features on: `development_mode=False` leaves a base's `developmentMode: true` alone.
* Poll interval: minutes in, milliseconds out (config.json and the supervisor use ms).

Wi-Fi keys: the API emits `wifiSsid`/`wifiKey` for network=wifi, but balenaOS 2+ never reads
them; the network comes from `system-connections/` keyfiles. Written into an image they would
only be a second copy of the passphrase in a file many tools read, so by default they are left
out. They are always removed from a base, with the other connman-era keys the image maker
strips, because `DeviceConfig.network` is the one source of network settings (the CLI lifts a
base's Wi-Fi into it). `include_wifi=True` writes them back from `cfg.network`, the API's
behaviour, for `flasher config generate`: its output is meant to be fed back through `--config`
(to Flasher or the balena CLI), which turns them into keyfiles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flasher.errors import ConfigError
from flasher.models import DeviceConfig, NetworkKind

DEFAULT_API_URL = "https://api.balena-cloud.com"
SUPERVISOR_LISTEN_PORT = 48484
VPN_PORT = 443
DEFAULT_FLEET_POLL_INTERVAL_MIN = 10
CONFIG_FILE_MAX_BYTES = 1024 * 1024
CONFIG_MAX_DEPTH = 32  # config.json nests 3 levels; far deeper is not one
REDACTED = "***"

# Keys only balenaOS 1.x (connman) or the image maker's request understood.
_DEAD_NETWORK_KEYS = ("wifiSsid", "wifiKey", "ip", "netmask", "gateway", "routeMetric", "network")
# balenaCloud names its VPN and registry hosts differently from openBalena's defaults.
_CLOUD_DOMAINS = ("balena-cloud.com", "balena-staging.com")
_SECRET_KEY = re.compile(r"key|token|secret|password|passphrase|psk", re.IGNORECASE)
# Public material that merely has "key" in its name.
_PUBLIC_KEYS = frozenset({"sshKeys"})


def endpoints_for(api_url: str | None) -> dict[str, str]:
    """apiEndpoint, vpnEndpoint, registryEndpoint and deltaEndpoint for a balena API URL.

    `https://api.<domain>`: balenaCloud domains get cloudlink./registry2./delta., other domains
    openBalena's vpn./registry./delta. An API without the `api.` prefix (a local sandbox, an IP)
    serves everything from its own host.
    """
    parts = urlsplit((api_url or DEFAULT_API_URL).rstrip("/"))
    scheme = parts.scheme or "https"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    api_endpoint = f"{scheme}://{parts.netloc}"
    if not host.startswith("api."):
        return {
            "apiEndpoint": api_endpoint,
            "vpnEndpoint": host,
            "registryEndpoint": host,
            "deltaEndpoint": api_endpoint,
        }
    domain = host[len("api.") :]
    cloud = domain in _CLOUD_DOMAINS
    return {
        "apiEndpoint": api_endpoint,
        "vpnEndpoint": f"{'cloudlink' if cloud else 'vpn'}.{domain}",
        "registryEndpoint": f"{'registry2' if cloud else 'registry'}.{domain}",
        "deltaEndpoint": f"{scheme}://delta.{domain}{port}",
    }


def _poll_interval_ms(minutes: int) -> int:
    return minutes * 60 * 1000


def _fleet_keys(cfg: DeviceConfig) -> dict[str, Any]:
    """The API's keys for a fleet device, in the API's order (apiKey only when we hold one)."""
    keys: dict[str, Any] = {
        "applicationId": cfg.fleet_id,
        "deviceType": cfg.device_type,
        "appUpdatePollInterval": _poll_interval_ms(
            cfg.poll_interval_min or DEFAULT_FLEET_POLL_INTERVAL_MIN
        ),
        "listenPort": SUPERVISOR_LISTEN_PORT,
        "vpnPort": VPN_PORT,
        **endpoints_for(cfg.api_url),
    }
    if cfg.provisioning_key is not None:
        keys["apiKey"] = cfg.provisioning_key.reveal()
    return keys


def _without_dead_network_keys(base: Mapping[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in base.items() if k not in _DEAD_NETWORK_KEYS}
    files = config.get("files")
    if isinstance(files, Mapping):
        # connman's network/ files may hold the passphrase; OS 2+ reads none of them.
        kept = {k: v for k, v in files.items() if not str(k).startswith("network/")}
        if kept:
            config["files"] = kept
        else:
            del config["files"]
    if config.get("connectivity") == "connman":
        del config["connectivity"]
    return config


def render_config_json(cfg: DeviceConfig, *, include_wifi: bool = False) -> dict[str, Any]:
    """The config.json object for a validated DeviceConfig (see the module docstring)."""
    config: dict[str, Any]
    if cfg.base_config is not None:
        config = _without_dead_network_keys(cfg.base_config)
        config["deviceType"] = cfg.device_type
        if cfg.fleet_id is not None:
            fleet = _fleet_keys(cfg)
            config["applicationId"] = cfg.fleet_id
            if cfg.provisioning_key is not None:
                config["apiKey"] = fleet["apiKey"]
            for key, value in fleet.items():
                config.setdefault(key, value)
        if cfg.poll_interval_min is not None:
            config["appUpdatePollInterval"] = _poll_interval_ms(cfg.poll_interval_min)
    elif cfg.fleet_id is not None:
        config = _fleet_keys(cfg)
    else:
        config = {"deviceType": cfg.device_type}
        if cfg.poll_interval_min is not None:
            config["appUpdatePollInterval"] = _poll_interval_ms(cfg.poll_interval_min)
    network = cfg.network
    if include_wifi and network.kind is NetworkKind.WIFI and network.wifi_ssid:
        config["wifiSsid"] = network.wifi_ssid
        config["wifiKey"] = network.wifi_key.reveal() if network.wifi_key else ""
    if cfg.development_mode:
        config["developmentMode"] = True
    if cfg.hostname is not None:
        config["hostname"] = cfg.hostname
    if cfg.persistent_logging or (cfg.base_config is None and cfg.fleet_id is None):
        config["persistentLogging"] = cfg.persistent_logging
    return config


def config_json_bytes(cfg: DeviceConfig, *, include_wifi: bool = False) -> bytes:
    """config.json as written to the boot partition: compact, key order as rendered, UTF-8,
    no trailing newline (as `JSON.stringify` writes it). Same config, same bytes."""
    return dump_config(render_config_json(cfg, include_wifi=include_wifi))


def dump_config(config: Mapping[str, Any]) -> bytes:
    return json.dumps(config, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _looks_secret(key: str) -> bool:
    return key not in _PUBLIC_KEYS and _SECRET_KEY.search(key) is not None


def _mask(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _mask(v) for k, v in value.items()}
    if value in ("", None):
        return value
    return REDACTED


def redact_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to show or log: values of apiKey, deviceApiKey(s), wifiKey and any key whose
    name says key/token/secret/password/passphrase/psk become "***" (empty values stay empty,
    nested maps keep their keys), at any depth."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if _looks_secret(str(key)):
            out[key] = _mask(value)
        elif isinstance(value, Mapping):
            out[key] = redact_config(value)
        else:
            out[key] = value
    return out


def check_config_object(config: Any, source: str) -> dict[str, Any]:
    """A parsed config.json checked as `balena os configure --config` checks it, and a little
    more: an object; numeric `applicationId`; non-empty `deviceType`; boolean
    `installer.secureboot`; a non-negative integer `appUpdatePollInterval` (ms)."""
    field = "config"
    if not isinstance(config, dict):
        raise ConfigError(field, f"{source} is not a JSON object")
    app_id = config.get("applicationId")
    if app_id is not None and (
        isinstance(app_id, bool)
        or not (isinstance(app_id, int) or (isinstance(app_id, str) and app_id.isdecimal()))
    ):
        raise ConfigError(field, f"{source}: applicationId must be a number")
    device_type = config.get("deviceType")
    if "deviceType" in config and (not isinstance(device_type, str) or not device_type):
        raise ConfigError(field, f"{source}: deviceType must be a non-empty string")
    installer = config.get("installer")
    if installer is not None:
        if not isinstance(installer, dict):
            raise ConfigError(field, f"{source}: installer must be an object")
        if "secureboot" in installer and not isinstance(installer["secureboot"], bool):
            raise ConfigError(field, f"{source}: installer.secureboot must be true or false")
    poll = config.get("appUpdatePollInterval")
    if poll is not None and (isinstance(poll, bool) or not isinstance(poll, int) or poll < 0):
        raise ConfigError(
            field, f"{source}: appUpdatePollInterval must be a whole number of milliseconds"
        )
    return config


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read and check a config.json given by the user (`--config FILE`)."""
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(CONFIG_FILE_MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError("config", f"cannot read {source}: {err.strerror or err}") from None
    if len(data) > CONFIG_FILE_MAX_BYTES:
        raise ConfigError("config", f"{source} is larger than 1 MiB; it is not a config.json")
    try:
        parsed = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError("config", f"{source} is not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ConfigError(
            "config", f"{source} is not valid JSON ({err.msg} at line {err.lineno})"
        ) from None
    except RecursionError:
        raise ConfigError("config", _too_deep(source)) from None
    _check_text_tree(parsed, source)
    return check_config_object(parsed, source)


def _too_deep(source: str) -> str:
    return f"{source} nests deeper than {CONFIG_MAX_DEPTH} levels; it is not a config.json"


def _check_text_tree(value: Any, source: str) -> None:
    """Without recursion: nesting at most CONFIG_MAX_DEPTH deep, and every text (keys too) valid
    Unicode (JSON's \\u escapes can spell a lone surrogate, which no file can hold)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > CONFIG_MAX_DEPTH:
            raise ConfigError("config", _too_deep(source))
        if isinstance(item, dict):
            pending.extend((key, depth) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(
                    "config",
                    f"{source} holds a \\u escape of a lone surrogate, which is not text",
                ) from None
