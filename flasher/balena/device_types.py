"""Device types from the balena API: listing, alias resolution and lookup by slug or name.

`DeviceTypes(session)` answers with flasher.models.DeviceType values. Aliases resolve through
the API's `device_type_alias` table (which lists every slug as an alias of itself), memoised for
the life of the object, so "raspberrypi" becomes "raspberry-pi" and "nuc" becomes "intel-nuc".

Imports flasher.balena.session (requests); never Qt or the faces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flasher.balena.pine import merge_options
from flasher.balena.session import BalenaSession
from flasher.error_codes import Action
from flasher.errors import CatalogError
from flasher.models import DeviceType

_LIST_OPTIONS: Mapping[str, Any] = {
    "$select": ["id", "slug", "name", "is_private", "contract"],
    "$orderby": {"name": "asc"},
    "$expand": {
        "is_of__cpu_architecture": {"$select": "slug"},
        "device_type_alias": {
            "$select": "is_referenced_by__alias",
            "$orderby": {"is_referenced_by__alias": "asc"},
        },
    },
}

_USABLE_RELEASE: Mapping[str, Any] = {
    "status": "success",
    "is_final": True,
    "is_invalidated": False,
}

# Device types with at least one usable OS release (the SDK's getAllSupported).
_SUPPORTED_FILTER: Mapping[str, Any] = {
    "is_default_for__application": {
        "$any": {
            "$alias": "idfa",
            "$expr": {
                "idfa": {
                    "is_host": True,
                    "is_archived": False,
                    "owns__release": {
                        "$any": {
                            "$alias": "r",
                            "$expr": {"r": _USABLE_RELEASE},
                        }
                    },
                }
            },
        }
    }
}


def invalid_device_type(name: str) -> CatalogError:
    return CatalogError(
        f"Invalid device type: {name}",
        hint="Use a device type slug from the list of device types.",
        action=Action.LIST_DEVICE_TYPES,
        device_type=name,
    )


def _first_slug(rows: Any, key: str) -> str | None:
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        value = rows[0].get(key)
        return value if isinstance(value, str) else None
    return None


def is_installer_media(contract: Any) -> bool:
    """Whether the type's default image installs itself to internal storage (a "flasher").

    The rule balenaOS takeover uses: boots from internal storage by default, can boot from
    something else, and is not flashed over a vendor protocol (such as RPIBOOT).
    """
    data = contract.get("data") if isinstance(contract, dict) else None
    if not isinstance(data, dict):
        return False
    media = data.get("media")
    if not isinstance(media, dict):
        return False
    return (
        media.get("defaultBoot") == "internal"
        and bool(media.get("altBoot"))
        and not data.get("flashProtocol")
        and not media.get("flashProtocol")
    )


def device_type_from_row(row: Mapping[str, Any]) -> DeviceType:
    slug = str(row.get("slug", ""))
    aliases = [
        a.get("is_referenced_by__alias")
        for a in row.get("device_type_alias") or []
        if isinstance(a, dict)
    ]
    return DeviceType(
        slug=slug,
        name=str(row.get("name", slug)),
        arch=_first_slug(row.get("is_of__cpu_architecture"), "slug") or "",
        aliases=tuple(a for a in aliases if isinstance(a, str) and a != slug),
        is_private=bool(row.get("is_private", False)),
        flasher=is_installer_media(row.get("contract")),
    )


class DeviceTypes:
    """Device-type queries on one session; alias resolutions are remembered."""

    def __init__(self, session: BalenaSession) -> None:
        self._session = session
        self._slugs: dict[str, str] = {}

    def list_all(self, *, supported_only: bool = False) -> list[DeviceType]:
        """Every device type visible to the session, by name; optionally only those with an OS."""
        options = dict(_LIST_OPTIONS)
        if supported_only:
            options["$filter"] = _SUPPORTED_FILTER
        return [device_type_from_row(r) for r in self._session.pine_get("device_type", options)]

    def get(self, slug_or_alias: str) -> DeviceType:
        """The device type a slug or alias names; CatalogError "Invalid device type" otherwise."""
        rows = self._session.pine_get(
            "device_type", merge_options(_LIST_OPTIONS, self._alias_filter(slug_or_alias))
        )
        if not rows:
            raise invalid_device_type(slug_or_alias)
        device_type = device_type_from_row(rows[0])
        self._slugs[slug_or_alias] = device_type.slug
        return device_type

    def resolve_slug(self, slug_or_alias: str) -> str:
        """The canonical slug for a slug or alias (asked once per name)."""
        if slug_or_alias not in self._slugs:
            options = {"$select": "slug", **self._alias_filter(slug_or_alias)}
            options["$orderby"] = {"name": "asc"}
            rows = self._session.pine_get("device_type", options)
            slug = _first_slug(rows, "slug")
            if slug is None:
                raise invalid_device_type(slug_or_alias)
            self._slugs[slug_or_alias] = slug
        return self._slugs[slug_or_alias]

    def get_by_slug_or_name(self, slug_or_name: str) -> DeviceType:
        """The device type whose slug or display name is exactly `slug_or_name`."""
        options = merge_options(
            _LIST_OPTIONS,
            {"$top": 1, "$filter": {"$or": {"name": slug_or_name, "slug": slug_or_name}}},
        )
        rows = self._session.pine_get("device_type", options)
        if not rows:
            raise invalid_device_type(slug_or_name)
        return device_type_from_row(rows[0])

    @staticmethod
    def _alias_filter(name: str) -> dict[str, Any]:
        return {
            "$top": 1,
            "$filter": {
                "device_type_alias": {
                    "$any": {
                        "$alias": "dta",
                        "$expr": {"dta": {"is_referenced_by__alias": name}},
                    }
                }
            },
        }
