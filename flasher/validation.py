"""Rules for device settings: per-field validators (for inline checks in the GUI) and
`validate_device_config`, which runs them all in a fixed order before any I/O.

Pure: no I/O, no printing. Imports the standard library, flasher.errors, flasher.models and
flasher.image.network (keyfile syntax). Every failure is a ConfigError whose `field` is the name
the CLI and GUI show ("wifi_key", "ipv4.dns[1]", "keyfile:<name>") and whose rule never quotes a
secret.

Decisions:
* Hostnames are one DNS label (RFC 1123: 1-63 of a-z, 0-9 and '-', not starting or ending with
  '-'). balenaOS sets it as the system hostname and announces `<hostname>.local` over mDNS, so a
  dotted name would not resolve as typed; uppercase is refused so that what is typed is what the
  device announces.
* Wi-Fi settings given with an Ethernet network are an error with a hint rather than silently
  ignored: a forgotten `--network wifi` would otherwise produce a device that never connects.
* balenaOS 1.x (connman) is refused: its network files are not NetworkManager keyfiles and the
  API stopped configuring versions up to 1.2.0.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from flasher.errors import ConfigError
from flasher.image.network import (
    KeyfileSyntaxError,
    generated_keyfile_name,
    netmask_prefix,
    parse_keyfile,
)
from flasher.models import (
    DeviceConfig,
    Keyfile,
    NetworkKind,
    NetworkSettings,
    Secret,
    StaticIPv4,
)

SSID_MAX_BYTES = 32
WPA_PASSPHRASE_MIN = 8
WPA_PASSPHRASE_MAX = 63
WPA_HEX_KEY_LENGTH = 64
# The device-type question's minimum and the supervisor's documented range (600000-86400000 ms).
POLL_INTERVAL_MIN_MINUTES = 10
POLL_INTERVAL_MAX_MINUTES = 24 * 60
HOSTNAME_MAX = 63
KEYFILE_NAME_MAX = 255

_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,98}[a-z0-9])?")
# balena-semver accepts a leading "v", "+revN", ".dev"/".prod" and "-<timestamp>" drafts.
_OS_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:[-+.][0-9A-Za-z.+-]+)?")
_HOSTNAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# FAT long names cannot hold these, and the boot partition is FAT.
_FAT_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f"*/:<>?\\|]')
# NetworkManager skips files that look like temporary files (".XXXXXX"), backups, certificates;
# this is also why balenaOS's samples named "*.ignore" are never loaded.
_NM_IGNORED = re.compile(r"(?:\..*|.*~|.*\.[A-Za-z0-9]{6}|.*\.(?:[pP][eE][mM]|[dD][eE][rR]))")
_PROVISIONING_KEY = re.compile(r"[\x21-\x7e]{1,200}")


def validate_device_type(slug: str) -> None:
    hint = "list them with 'flasher device-types'"
    if not slug:
        raise ConfigError("device_type", "is required", hint=hint)
    if not _SLUG.fullmatch(slug):
        raise ConfigError(
            "device_type",
            f"'{slug}' is not a device type slug (lowercase letters, digits, '-' and '_')",
            hint=hint,
        )


def validate_os_version(version: str) -> None:
    match = _OS_VERSION.fullmatch(version)
    if match is None:
        raise ConfigError(
            "os_version",
            f"'{version}' is not a balenaOS version such as 6.5.50+rev8",
            hint="list them with 'flasher os versions <device type>'",
        )
    if int(match.group(1)) < 2:
        raise ConfigError(
            "os_version",
            f"balenaOS {version} uses connman networking, which Flasher does not configure",
            hint="use balenaOS 2.0 or later",
        )


def validate_wifi_ssid(ssid: str | None) -> None:
    if not ssid:
        raise ConfigError("wifi_ssid", "is required for a Wi-Fi network")
    try:
        size = len(ssid.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigError("wifi_ssid", "is not valid UTF-8 text") from None
    if size > SSID_MAX_BYTES:
        raise ConfigError(
            "wifi_ssid", f"is {size} bytes long; Wi-Fi names hold at most {SSID_MAX_BYTES} bytes"
        )


def validate_wifi_key(key: Secret | str | None) -> None:
    """WPA-PSK: 8-63 printable ASCII characters or 64 hex digits; empty means an open network."""
    value = key.reveal() if isinstance(key, Secret) else key
    if not value:
        return
    if len(value) == WPA_HEX_KEY_LENGTH:
        if all(c in "0123456789abcdefABCDEF" for c in value):
            return
        raise ConfigError(
            "wifi_key", "a 64-character key must be hexadecimal (a passphrase has 8-63 characters)"
        )
    if not all(" " <= c <= "~" for c in value):
        raise ConfigError(
            "wifi_key", "may only contain printable ASCII characters (letters, digits, symbols)"
        )
    if not WPA_PASSPHRASE_MIN <= len(value) <= WPA_PASSPHRASE_MAX:
        raise ConfigError(
            "wifi_key",
            f"has {len(value)} characters; a WPA passphrase has "
            f"{WPA_PASSPHRASE_MIN}-{WPA_PASSPHRASE_MAX}",
            hint="an open network has no key at all",
        )


def validate_ipv4_address(value: str, field: str = "ipv4.address") -> ipaddress.IPv4Address:
    """A unicast IPv4 address a device can own (not loopback, multicast, 0.0.0.0 or class E)."""
    try:
        address = ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(field, f"'{value}' is not an IPv4 address such as 192.168.1.50") from None
    for bad, what in (
        (address.is_unspecified, "the unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_multicast, "a multicast address"),
        (address == ipaddress.IPv4Address("255.255.255.255"), "the broadcast address"),
        (address.is_reserved, "a reserved (class E) address"),
    ):
        if bad:
            raise ConfigError(field, f"{value} is {what}")
    return address


def validate_netmask(value: str) -> int:
    """The prefix length of a netmask given as "24" or "255.255.255.0"."""
    try:
        return netmask_prefix(value)
    except ValueError:
        raise ConfigError(
            "ipv4.netmask",
            f"'{value}' is not a netmask: use a prefix length 0-32 or a contiguous mask "
            "such as 255.255.255.0",
        ) from None


def validate_dns(servers: Sequence[str]) -> None:
    for index, server in enumerate(servers):
        field = f"ipv4.dns[{index}]"
        try:
            address = ipaddress.IPv4Address(server)
        except ValueError:
            raise ConfigError(field, f"'{server}' is not an IPv4 address such as 1.1.1.1") from None
        if address.is_unspecified or address.is_multicast or address.is_reserved:
            raise ConfigError(field, f"{server} cannot be a DNS server")


def validate_static_ipv4(ipv4: StaticIPv4) -> None:
    address = validate_ipv4_address(ipv4.address, "ipv4.address")
    prefix = validate_netmask(ipv4.netmask)
    gateway = validate_ipv4_address(ipv4.gateway, "ipv4.gateway")
    network = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
    if prefix < 31 and address in (network.network_address, network.broadcast_address):
        which = "network" if address == network.network_address else "broadcast"
        raise ConfigError(
            "ipv4.address", f"{address} is the {which} address of {network}; pick a host address"
        )
    if gateway == address:
        raise ConfigError("ipv4.gateway", "is the device's own address")
    if gateway not in network:
        raise ConfigError(
            "ipv4.gateway",
            f"{gateway} is outside the device's subnet {network}",
            hint="check the netmask, or use the router's address on this subnet",
        )
    validate_dns(ipv4.dns)


def validate_network(network: NetworkSettings) -> None:
    if network.kind is NetworkKind.WIFI:
        validate_wifi_ssid(network.wifi_ssid)
        validate_wifi_key(network.wifi_key)
        validate_open_network(network)
    else:
        wifi_hint = "add '--network wifi', or remove the Wi-Fi settings"
        if network.wifi_ssid:
            raise ConfigError("wifi_ssid", "is set but the network is ethernet", hint=wifi_hint)
        if network.wifi_key:
            raise ConfigError("wifi_key", "is set but the network is ethernet", hint=wifi_hint)
        if network.hidden:
            raise ConfigError("hidden", "only applies to Wi-Fi networks", hint=wifi_hint)
        if network.open_network:
            raise ConfigError("open_network", "only applies to Wi-Fi networks", hint=wifi_hint)
    if network.ipv4 is not None:
        validate_static_ipv4(network.ipv4)


def validate_poll_interval(minutes: int | None) -> None:
    if minutes is None:
        return
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise ConfigError("poll_interval_min", "must be a whole number of minutes")
    if not POLL_INTERVAL_MIN_MINUTES <= minutes <= POLL_INTERVAL_MAX_MINUTES:
        raise ConfigError(
            "poll_interval_min",
            f"must be {POLL_INTERVAL_MIN_MINUTES}-{POLL_INTERVAL_MAX_MINUTES} minutes "
            f"(10 minutes to 24 hours), got {minutes}",
        )


def validate_hostname(name: str | None) -> None:
    if name is None:
        return
    field = "hostname"
    if not name:
        raise ConfigError(field, "is empty", hint="leave it unset to use the device's UUID")
    if len(name) > HOSTNAME_MAX:
        raise ConfigError(field, f"has {len(name)} characters; at most {HOSTNAME_MAX}")
    if "." in name:
        raise ConfigError(
            field,
            "must be a single name without dots; the device announces it as <name>.local",
        )
    if name.lower() != name:
        raise ConfigError(field, "must be lowercase", hint=f"use '{name.lower()}'")
    if name.startswith("-") or name.endswith("-"):
        raise ConfigError(field, "must not start or end with '-'")
    if not _HOSTNAME.fullmatch(name):
        raise ConfigError(field, "may only contain letters a-z, digits 0-9 and '-'")


def validate_api_url(url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            "api_url", f"'{url}' is not an http(s) URL such as https://api.example.com"
        )


def validate_fleet_id(fleet_id: int | None) -> None:
    if fleet_id is None:
        return
    if isinstance(fleet_id, bool) or not isinstance(fleet_id, int) or fleet_id <= 0:
        raise ConfigError("fleet_id", "must be a positive number (the fleet's ID)")


def validate_provisioning_key(key: Secret | None, fleet_id: int | None) -> None:
    if key is None:
        return
    if fleet_id is None:
        raise ConfigError(
            "provisioning_key",
            "needs a fleet: a provisioning key only registers devices into its fleet",
            hint="add '--fleet <ID>'",
        )
    if not _PROVISIONING_KEY.fullmatch(key.reveal()):
        raise ConfigError(
            "provisioning_key", "must be 1-200 printable ASCII characters without spaces"
        )


def validate_keyfile_name(name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", errors="backslashreplace").decode("ascii", errors="replace")
        raise ConfigError(f"keyfile:{shown}", "a keyfile name must be UTF-8 text") from None
    field = f"keyfile:{name}"
    if not name or name in (".", ".."):
        raise ConfigError(field, "is not a file name")
    if "/" in name or _FAT_FORBIDDEN.search(name):
        raise ConfigError(
            field, 'a keyfile name cannot contain / \\ : * ? " < > | or control characters'
        )
    if len(name) > KEYFILE_NAME_MAX:
        raise ConfigError(field, f"a keyfile name has at most {KEYFILE_NAME_MAX} characters")
    if name.endswith((" ", ".")):
        raise ConfigError(field, "a keyfile name cannot end with a space or '.' on FAT")
    if _NM_IGNORED.fullmatch(name):
        raise ConfigError(
            field,
            "NetworkManager ignores files with this name (hidden, backup '~', '.pem'/'.der', "
            "or a 6-character extension such as '.ignore')",
            hint="rename the file, e.g. without an extension",
        )


def validate_keyfile(keyfile: Keyfile) -> None:
    """A user keyfile: safe name, GKeyFile syntax, and a [connection] with `id` and `type`."""
    validate_keyfile_name(keyfile.name)
    field = f"keyfile:{keyfile.name}"
    try:
        groups = parse_keyfile(keyfile.content)
    except KeyfileSyntaxError as err:
        raise ConfigError(field, f"is not a NetworkManager keyfile: {err}") from None
    connection = groups.get("connection")
    if connection is None:
        raise ConfigError(field, "has no [connection] group")
    for key in ("id", "type"):
        if not connection.get(key):
            raise ConfigError(field, f"[connection] has no '{key}'")


def _validate_keyfiles(cfg: DeviceConfig) -> None:
    generated = generated_keyfile_name(cfg.network)
    seen: set[str] = set()
    for keyfile in cfg.extra_keyfiles:
        validate_keyfile(keyfile)
        field = f"keyfile:{keyfile.name}"
        if keyfile.name in seen:
            raise ConfigError(field, "is given twice")
        if keyfile.name == generated:
            raise ConfigError(
                field,
                "has the name of the connection Flasher generates from the network settings",
                hint="rename the file, or drop the network options it duplicates",
            )
        seen.add(keyfile.name)


def _base_value(base: Mapping[str, Any] | None, key: str) -> Any:
    return None if base is None else base.get(key)


def _validate_provisioning(cfg: DeviceConfig, *, expect_remote_config: bool) -> None:
    validate_fleet_id(cfg.fleet_id)
    validate_provisioning_key(cfg.provisioning_key, cfg.fleet_id)
    if cfg.fleet_id is None:
        return
    base_app = _base_value(cfg.base_config, "applicationId")
    if cfg.provisioning_key is None and base_app is not None and str(base_app) != str(cfg.fleet_id):
        raise ConfigError(
            "fleet_id",
            f"differs from the applicationId {base_app} in the given config.json, whose keys "
            "belong to that fleet",
            hint="drop '--fleet', or give that fleet's provisioning key",
        )
    has_credentials = cfg.provisioning_key is not None or any(
        _base_value(cfg.base_config, key) for key in ("apiKey", "deviceApiKey")
    )
    if not has_credentials and not expect_remote_config:
        raise ConfigError(
            "provisioning_key",
            "is required with a fleet: without it the device cannot register",
            hint="pass one of the fleet's provisioning keys in the FLASHER_PROVISIONING_KEY "
            "environment variable",
        )


def validate_open_network(network: NetworkSettings) -> None:
    """A Wi-Fi network without a key is open only when that was asked for: a key forgotten
    somewhere (no terminal to ask, a remembered SSID) must not leave the device on an open
    network, or on none."""
    has_key = network.wifi_key is not None and bool(network.wifi_key.reveal())
    if not has_key and not network.open_network:
        raise ConfigError(
            "wifi_key",
            "is required for a Wi-Fi network, unless an open network is asked for explicitly",
            hint="give the network's key, or choose an open network (no key) explicitly",
        )
    if has_key and network.open_network:
        raise ConfigError(
            "wifi_key",
            "is set but an open network (no key) was asked for",
            hint="drop the key, or do not ask for an open network",
        )


def validate_device_config(cfg: DeviceConfig, *, expect_remote_config: bool = False) -> None:
    """Every rule, in a stable order: what the device is, its network, its behaviour, its fleet,
    then extra keyfiles. `expect_remote_config` says the caller will fetch config.json from the
    API (which creates the provisioning key), so a fleet without a key is not yet an error."""
    validate_device_type(cfg.device_type)
    if cfg.os_version is not None:
        validate_os_version(cfg.os_version)
    validate_network(cfg.network)
    validate_poll_interval(cfg.poll_interval_min)
    validate_hostname(cfg.hostname)
    if cfg.development_mode and cfg.os_version is not None and "prod" in cfg.os_version:
        raise ConfigError(
            "development_mode",
            f"conflicts with the production balenaOS version {cfg.os_version}",
            hint="drop '--dev', or use a development or unified (no .prod) version",
        )
    validate_api_url(cfg.api_url)
    _validate_provisioning(cfg, expect_remote_config=expect_remote_config)
    _validate_keyfiles(cfg)
