"""Inline validation for form fields: each field has a check (a core validator raising
ConfigError) and an error label; errors show once the field was touched, and a ConfigError from
the whole-config validation is routed to the field it names. Also the small parsers the
Configure page needs (DNS list, fleet ID, connection files, the gateway's subnet rule, the
summary line).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from flasher.errors import ConfigError
from flasher.gui.widgets import FieldError
from flasher.models import DeviceConfig, Keyfile, NetworkKind, StaticIPv4
from flasher.validation import (
    validate_fleet_id,
    validate_ipv4_address,
    validate_netmask,
    validate_static_ipv4,
)

KEYFILE_MAX_BYTES = 64 * 1024

# Core field names (ConfigError.field) → the page's field keys.
_CORE_FIELDS = {
    "wifi_ssid": "ssid",
    "hidden": "ssid",
    "wifi_key": "key",
    "ipv4.address": "address",
    "ipv4.netmask": "netmask",
    "ipv4.gateway": "gateway",
    "poll_interval_min": "poll",
    "hostname": "hostname",
    "fleet_id": "fleet",
    "provisioning_key": "provisioning",
    "development_mode": "development_mode",
}

_SUBJECTS = {
    "ssid": "The network name",
    "key": "The key",
    "address": "The address",
    "netmask": "The netmask",
    "gateway": "The gateway",
    "poll": "The interval",
    "hostname": "The hostname",
    "fleet": "The fleet ID",
    "provisioning": "The provisioning key",
    "development_mode": "Development mode",
}

# Rules that continue their field's name ("is required…", "must be…").
_PREDICATE_START = {
    "is",
    "must",
    "has",
    "may",
    "needs",
    "differs",
    "only",
    "conflicts",
    "cannot",
    "for",
    "was",
}


def field_key(core_field: str) -> str | None:
    if core_field.startswith("ipv4.dns"):
        return "dns"
    if core_field.startswith("keyfile:"):
        return "keyfile"
    return _CORE_FIELDS.get(core_field)


def error_text(key: str, err: ConfigError) -> str:
    """The rule as a sentence: "The hostname must be lowercase", "'x' is not an IPv4 …"."""
    rule = err.rule
    if key == "keyfile":
        return f"{err.field.removeprefix('keyfile:')}: {rule}."
    subject = _SUBJECTS.get(key)
    if subject and rule.split(" ", 1)[0] in _PREDICATE_START:
        return f"{subject} {rule}."
    return f"{rule[:1].upper()}{rule[1:]}."


@dataclass
class _Field:
    error: FieldError
    check: Callable[[], object]
    active: bool = True
    touched: bool = False


class FieldSet:
    def __init__(self) -> None:
        self._fields: dict[str, _Field] = {}

    def add(self, key: str, error: FieldError, check: Callable[[], object]) -> None:
        self._fields[key] = _Field(error, check)

    def set_active(self, key: str, active: bool) -> None:
        """Inactive fields (Wi-Fi while on Ethernet) are valid and show nothing."""
        self._fields[key].active = active

    def touch(self, key: str) -> None:
        if key in self._fields:
            self._fields[key].touched = True

    def touch_if_shown(self, key: str) -> None:
        """Re-check a dependent field (the gateway after the netmask) only if it has a value
        the user already saw judged."""
        field = self._fields[key]
        field.touched = field.touched or field.error.isVisible()

    def touched(self, key: str) -> bool:
        return self._fields[key].touched

    def touch_all(self) -> None:
        for field in self._fields.values():
            field.touched = True

    def clear_touched(self) -> None:
        for field in self._fields.values():
            field.touched = False
            field.error.show_error(None)

    def _run(self, key: str) -> str | None:
        field = self._fields[key]
        if not field.active:
            return None
        try:
            field.check()
        except ConfigError as err:
            return error_text(key, err)
        return None

    def refresh(self) -> bool:
        """Show the errors of touched fields; True when every active field is valid."""
        ok = True
        for key, field in self._fields.items():
            problem = self._run(key)
            ok = ok and problem is None
            field.error.show_error(problem if field.touched else None)
        return ok

    def first_problem(self) -> str | None:
        """The first active field's error, touched or not (why Next is disabled)."""
        for key in self._fields:
            problem = self._run(key)
            if problem is not None:
                return problem
        return None

    def show_for(self, core_field: str, err: ConfigError) -> bool:
        """Show a whole-config error under its field; False if no field matches."""
        key = field_key(core_field)
        if key is None or key not in self._fields:
            return False
        self._fields[key].error.show_error(error_text(key, err))
        return True


def check_gateway(address: str, netmask: str, gateway: str) -> None:
    """The gateway is an IPv4 address, and in the device's subnet once address and netmask
    are valid themselves (their own fields say what is wrong with them)."""
    valid_gateway = validate_ipv4_address(gateway, "ipv4.gateway")
    try:
        validate_ipv4_address(address)
        validate_netmask(netmask)
    except ConfigError:
        return
    validate_static_ipv4(StaticIPv4(address.strip(), netmask.strip(), str(valid_gateway)))


def config_summary(config: DeviceConfig | None) -> str:
    """ "Wi-Fi “Lab”, 192.168.1.50, kiosk, development" for the window's summary line."""
    if config is None:
        return "image as it is"
    network = config.network
    wifi = "open Wi-Fi" if network.open_network else "Wi-Fi"
    words = [f"{wifi} “{network.wifi_ssid}”" if network.kind is NetworkKind.WIFI else "Ethernet"]
    if network.ipv4 is not None:
        words.append(network.ipv4.address)
    if config.hostname:
        words.append(config.hostname)
    if config.development_mode:
        words.append("development")
    return ", ".join(words)


def parse_dns(text: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[\s,;]+", text.strip()) if part)


def parse_fleet_id(text: str) -> int:
    value = text.strip()
    if not value.isdigit():
        raise ConfigError("fleet_id", "must be the fleet's numeric ID (see its dashboard URL)")
    fleet_id = int(value)
    validate_fleet_id(fleet_id)
    return fleet_id


def read_keyfile(path: str) -> Keyfile:
    """A connection file as a Keyfile named after the file; ConfigError if unreadable."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as fh:
            content = fh.read(KEYFILE_MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"keyfile:{name}", f"cannot be read: {err.strerror}") from None
    if len(content) > KEYFILE_MAX_BYTES:
        raise ConfigError(
            f"keyfile:{name}",
            f"is larger than {KEYFILE_MAX_BYTES // 1024} KiB; not a connection file",
        )
    return Keyfile(name, content)
