"""Frozen values that cross every boundary: secrets, device settings, catalog entries and drives.

Imports only the standard library. Validation lives in flasher.validation; rendering in
flasher.balena.config (config.json) and flasher.image.network (NetworkManager keyfiles).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Secret:
    """A string that never shows itself in repr, str, logs or exceptions; `reveal()` gets it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling would carry the value across process boundaries silently; refuse it.
        raise TypeError("Secret values are not picklable")


class NetworkKind(enum.StrEnum):
    ETHERNET = "ethernet"
    WIFI = "wifi"


@dataclass(frozen=True)
class StaticIPv4:
    """A static IPv4 setup. `netmask` may be dotted ("255.255.255.0") or a prefix ("24")."""

    address: str
    netmask: str
    gateway: str
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkSettings:
    """How the device connects. A Wi-Fi network without a key is open, which must be asked for
    explicitly with `open_network` (validation refuses a missing key otherwise)."""

    kind: NetworkKind = NetworkKind.ETHERNET
    wifi_ssid: str | None = None
    wifi_key: Secret | None = None
    hidden: bool = False
    ipv4: StaticIPv4 | None = None
    open_network: bool = False


@dataclass(frozen=True)
class Keyfile:
    """A NetworkManager connection file to place in /system-connections/ under `name`."""

    name: str
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class DeviceConfig:
    """Everything that goes into a device's boot partition.

    `base_config` is a ready config.json (from `--config FILE` or the API's `get_config`); the
    other fields are layered on top of it, or of a locally generated one when it is None.
    """

    device_type: str
    os_version: str | None = None
    fleet_id: int | None = None
    provisioning_key: Secret | None = None
    network: NetworkSettings = NetworkSettings()
    poll_interval_min: int | None = None
    hostname: str | None = None
    development_mode: bool = False
    persistent_logging: bool = False
    extra_keyfiles: tuple[Keyfile, ...] = ()
    base_config: Mapping[str, Any] | None = field(default=None, repr=False, hash=False)
    # The balena API the device is provisioned against (endpoints derive from it); None means
    # balena-cloud.com.
    api_url: str | None = None


@dataclass(frozen=True)
class DeviceType:
    slug: str
    name: str
    arch: str
    aliases: tuple[str, ...] = ()
    is_private: bool = False
    flasher: bool = False
    state: str = "released"


@dataclass(frozen=True)
class OsVersion:
    """One balenaOS release of a device type, as the SDK's OS model describes it."""

    raw_version: str
    device_type: str
    id: int | None = None
    variant: str | None = None
    os_type: str = "default"
    line: str | None = None
    known_issue: str | None = None
    stripped_version: str = ""
    based_on_version: str = ""
    is_recommended: bool = False
    is_final: bool = True
    is_invalidated: bool = False

    @property
    def formatted_version(self) -> str:
        extra = [p for p in (self.line, "recommended" if self.is_recommended else None) if p]
        suffix = f" ({', '.join(extra)})" if extra else ""
        return f"v{self.raw_version}{suffix}"


@dataclass(frozen=True)
class DrivePartition:
    """A partition of a drive (or the whole disk when it is mounted without a partition table).

    `dev` is its "major:minor"; `holders` are the devices stacked on it (dm, LVM, md).
    """

    path: str
    mountpoints: tuple[str, ...] = ()
    fstype: str | None = None
    label: str | None = None
    dev: str = ""
    holders: tuple[str, ...] = ()


@dataclass(frozen=True)
class Drive:
    """A whole-disk block device (or, for files, a regular-file target) that can be flashed."""

    path: str
    size_bytes: int
    dev: str = ""  # "major:minor"; empty for regular files
    description: str = ""
    vendor: str = ""
    model: str = ""
    serial: str = ""
    bus: str = ""
    removable: bool = False
    read_only: bool = False
    system: bool = False  # in use by the running system (/, /boot, swap, …): never written
    internal: bool = False  # a fixed disk, not a card: written only after explicit confirmation
    logical_block_size: int = 512
    physical_block_size: int = 512
    by_path: tuple[str, ...] = ()
    by_id: tuple[str, ...] = ()
    partitions: tuple[DrivePartition, ...] = ()
    is_file: bool = False

    @property
    def mountpoints(self) -> tuple[str, ...]:
        return tuple(m for p in self.partitions for m in p.mountpoints)
