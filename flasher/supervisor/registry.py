"""The devices the balena API knows: list them and find one by uuid (or its prefix) or name.

Used to give the supervisor proxy an exact uuid and to show what a login can reach. Reads the
pine `device` resource over flasher.balena.session; never Qt or the faces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flasher.balena.session import BalenaSession
from flasher.supervisor.errors import DeviceError, DeviceNotFound

_HEX = re.compile(r"^[0-9a-f]+$")
_FULL_UUID_LENGTHS = (32, 62)
_SELECT = [
    "id",
    "uuid",
    "device_name",
    "is_online",
    "is_connected_to_vpn",
    "os_version",
    "supervisor_version",
    "ip_address",
]
_EXPAND = {
    "is_of__device_type": {"$select": "slug"},
    "belongs_to__application": {"$select": ["id", "app_name"]},
}


@dataclass(frozen=True)
class RegisteredDevice:
    id: int
    uuid: str
    name: str
    online: bool
    device_type: str | None
    app_id: int | None
    app_name: str | None
    os_version: str | None
    supervisor_version: str | None
    ip_addresses: tuple[str, ...]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RegisteredDevice:
        def first(nav: str) -> dict[str, Any]:
            value = row.get(nav)
            return value[0] if isinstance(value, list) and value else {}

        app = first("belongs_to__application")
        return cls(
            id=int(row["id"]),
            uuid=str(row.get("uuid", "")),
            name=str(row.get("device_name", "")),
            online=bool(row.get("is_connected_to_vpn", row.get("is_online"))),
            device_type=first("is_of__device_type").get("slug"),
            app_id=app.get("id"),
            app_name=app.get("app_name"),
            os_version=row.get("os_version"),
            supervisor_version=row.get("supervisor_version"),
            ip_addresses=tuple(str(row.get("ip_address") or "").split()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uuid": self.uuid,
            "name": self.name,
            "online": self.online,
            "device_type": self.device_type,
            "app_id": self.app_id,
            "app_name": self.app_name,
            "os_version": self.os_version,
            "supervisor_version": self.supervisor_version,
            "ip_addresses": list(self.ip_addresses),
        }


def is_full_uuid(text: str) -> bool:
    """A whole device uuid (32 or 62 hexadecimal characters), not a prefix."""
    wanted = text.strip().lower()
    return len(wanted) in _FULL_UUID_LENGTHS and bool(_HEX.match(wanted))


def list_devices(session: BalenaSession) -> tuple[RegisteredDevice, ...]:
    rows = session.pine_get(
        "device", {"$select": _SELECT, "$expand": _EXPAND, "$orderby": "device_name asc"}
    )
    return tuple(RegisteredDevice.from_row(r) for r in rows)


def find_device(
    session: BalenaSession, *, uuid: str | None = None, name: str | None = None
) -> RegisteredDevice:
    """The one device with this uuid (a full one, or a prefix of at least 7) or this name."""
    if uuid is not None:
        wanted = uuid.strip().lower()
        if not _HEX.match(wanted) or len(wanted) < 7:
            raise DeviceError(
                f"{uuid!r} is not a device uuid.",
                where=session.api_url,
                hint="A uuid is hexadecimal; give at least its first 7 characters.",
            )
        condition: dict[str, Any] = (
            {"uuid": wanted}
            if len(wanted) in _FULL_UUID_LENGTHS
            else {"uuid": {"$startswith": wanted}}
        )
        what = f"uuid {uuid}"
    elif name is not None:
        condition = {"device_name": name}
        what = f"name {name!r}"
    else:
        raise ValueError("a uuid or a name is needed")
    rows = session.pine_get(
        "device", {"$select": _SELECT, "$expand": _EXPAND, "$filter": condition}
    )
    if not rows:
        raise DeviceNotFound(
            f"The balena API at {session.api_url} knows no device with {what}.",
            where=session.api_url,
            hint="List the devices this login can see, and check the uuid or name.",
        )
    if len(rows) > 1:
        raise DeviceError(
            f"Several devices match {what}.",
            where=session.api_url,
            hint="Give the full uuid.",
            matches=[str(r.get("uuid")) for r in rows],
        )
    return RegisteredDevice.from_row(rows[0])
