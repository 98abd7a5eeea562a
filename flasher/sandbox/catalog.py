"""The sandbox catalog: device types, CPU architectures, host apps, releases and fleets.

Loads flasher/data/sandbox-catalog.json (or any file of the same shape) into frozen values that the
sandbox API serves and the image synthesizer reads. Imports only the standard library, `semver`
and flasher.resources; never requests, Qt or the HTTP server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semver import Version

from flasher.resources import resource

CATALOG_FILE = "sandbox-catalog.json"
_REV = re.compile(r"^rev(\d+)$")


@dataclass(frozen=True)
class Tag:
    tag_key: str
    value: str


@dataclass(frozen=True)
class CpuArchitecture:
    id: int
    slug: str


@dataclass(frozen=True)
class CatalogDeviceType:
    """A device type with what its contract and device-type.json need."""

    id: int
    slug: str
    name: str
    arch: str
    aliases: tuple[str, ...]
    is_private: bool
    flasher: bool
    state: str
    media: Mapping[str, Any]
    flash_protocol: str | None
    yocto_version: str
    partition_scheme: str
    image_types: tuple[str, ...]
    connectivity: Mapping[str, bool]

    @property
    def default_image_type(self) -> str:
        return "flasher" if self.flasher and "flasher" in self.image_types else self.image_types[0]


@dataclass(frozen=True)
class Release:
    """One release of an application, with the semver fields the API derives from raw_version."""

    id: int
    application_id: int
    raw_version: str
    variant: str
    is_final: bool
    is_invalidated: bool
    status: str
    phase: str | None
    known_issue_list: str | None
    tags: tuple[Tag, ...]
    created_at: str
    contract: Mapping[str, Any] | None

    @property
    def parsed(self) -> Version:
        return Version.parse(self.raw_version)

    @property
    def build_parts(self) -> tuple[str, ...]:
        build = self.parsed.build
        return tuple(build.split(".")) if build else ()

    @property
    def revision(self) -> int | None:
        """The API's `revision`: None for drafts, else the N of a `+revN` build part (0 if none)."""
        if not self.is_final:
            return None
        for part in self.build_parts:
            match = _REV.match(part)
            if match:
                return int(match.group(1))
        return 0

    @property
    def is_development(self) -> bool:
        return "dev" in self.build_parts or self.variant == "dev"

    @property
    def is_available(self) -> bool:
        """What getAvailableOsVersions lists: finalized, not invalidated, successful."""
        return self.is_final and not self.is_invalidated and self.status == "success"


@dataclass(frozen=True)
class Application:
    """A host app (one OS line of a device type), a supervisor app or a user's fleet."""

    id: int
    slug: str
    app_name: str
    uuid: str
    device_type: str
    is_host: bool
    is_public: bool
    is_archived: bool
    tags: tuple[Tag, ...]
    releases: tuple[Release, ...]

    @property
    def os_type(self) -> str:
        for tag in self.tags:
            if tag.tag_key == "release-policy":
                return tag.value
        return "default"


@dataclass(frozen=True)
class Account:
    """The sandbox's one user, whom every non-empty token authenticates."""

    user_id: int
    actor_id: int
    username: str
    email: str


@dataclass(frozen=True)
class Catalog:
    cpu_architectures: tuple[CpuArchitecture, ...]
    device_types: tuple[CatalogDeviceType, ...]
    applications: tuple[Application, ...]
    download_sizes: Mapping[str, int]
    account: Account
    endpoints: Mapping[str, Any]
    _by_alias: dict[str, CatalogDeviceType] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for dt in self.device_types:
            for alias in (dt.slug, *dt.aliases):
                self._by_alias.setdefault(alias, dt)

    def device_type(self, slug_or_alias: str) -> CatalogDeviceType | None:
        """The device type named by its slug or any alias."""
        return self._by_alias.get(slug_or_alias)

    def arch(self, slug: str) -> CpuArchitecture:
        return next(a for a in self.cpu_architectures if a.slug == slug)

    def application(self, app_id: int) -> Application | None:
        return next((a for a in self.applications if a.id == app_id), None)

    def host_apps(self, device_type: str) -> tuple[Application, ...]:
        return tuple(a for a in self.applications if a.is_host and a.device_type == device_type)

    def os_releases(self, device_type: str, *, os_type: str | None = None) -> list[Release]:
        """Available host-OS releases of a device type, newest first (balena-semver order)."""
        releases = [
            r
            for app in self.host_apps(device_type)
            if os_type is None or app.os_type == os_type
            for r in app.releases
            if r.is_available
        ]
        return sorted(releases, key=lambda r: version_sort_key(r.raw_version), reverse=True)

    def latest_os_release(self, device_type: str) -> Release | None:
        """The newest available release of the default (non-ESR) line, as 'latest' means."""
        releases = self.os_releases(device_type, os_type="default")
        return releases[0] if releases else None

    def os_release(self, device_type: str, raw_version: str) -> Release | None:
        """The available host-OS release with exactly this version, on any line."""
        return next(
            (r for r in self.os_releases(device_type) if r.raw_version == raw_version), None
        )


def version_sort_key(raw_version: str) -> tuple[Version, int, bool, str]:
    """balena-semver ordering: semver precedence, then revN, then dev below non-dev, then text."""
    parsed = Version.parse(raw_version)
    parts = parsed.build.split(".") if parsed.build else []
    rev = next((int(m.group(1)) for p in parts if (m := _REV.match(p))), 0)
    return (parsed, rev, "dev" not in parts, raw_version)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read a catalog file; the bundled one when `path` is None. ValueError on a malformed file."""
    source = Path(path) if path is not None else resource(CATALOG_FILE)
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
        return _parse(raw)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: not a valid sandbox catalog ({err})") from err


def _tags(items: list[dict[str, str]]) -> tuple[Tag, ...]:
    return tuple(Tag(t["tag_key"], t["value"]) for t in items)


def _parse(raw: dict[str, Any]) -> Catalog:
    archs = tuple(CpuArchitecture(int(a["id"]), str(a["slug"])) for a in raw["cpu_architecture"])
    device_types = tuple(
        CatalogDeviceType(
            id=int(d["id"]),
            slug=d["slug"],
            name=d["name"],
            arch=d["arch"],
            aliases=tuple(d["aliases"]),
            is_private=bool(d["is_private"]),
            flasher=bool(d["flasher"]),
            state=d.get("state", "released"),
            media=d.get("media", {}),
            flash_protocol=d.get("flashProtocol"),
            yocto_version=d.get("yocto_version", "yocto-kirkstone"),
            partition_scheme=d.get("partition_scheme", "mbr"),
            image_types=tuple(d.get("image_types", ["raw"])),
            connectivity=d.get("connectivity", {}),
        )
        for d in raw["device_types"]
    )
    releases_by_app: dict[str, list[dict[str, Any]]] = raw["releases"]
    apps = []
    for a in raw["applications"]:
        app_id = int(a["id"])
        releases = tuple(
            Release(
                id=int(r["id"]),
                application_id=app_id,
                raw_version=r["raw_version"],
                variant=r.get("variant", ""),
                is_final=bool(r["is_final"]),
                is_invalidated=bool(r["is_invalidated"]),
                status=r["status"],
                phase=r.get("phase"),
                known_issue_list=r.get("known_issue_list"),
                tags=_tags(r.get("release_tag", [])),
                created_at=r["created_at"],
                contract=r.get("contract"),
            )
            for r in releases_by_app.get(a["slug"], [])
        )
        for release in releases:
            Version.parse(release.raw_version)  # the SDKs crash on invalid semver; refuse it here
        apps.append(
            Application(
                id=app_id,
                slug=a["slug"],
                app_name=a.get("app_name", a["slug"].split("/")[-1]),
                uuid=a.get("uuid", f"{app_id:032x}"),
                device_type=a["device_type"],
                is_host=bool(a["is_host"]),
                is_public=bool(a["is_public"]),
                is_archived=bool(a.get("is_archived", False)),
                tags=_tags(a.get("application_tag", [])),
                releases=releases,
            )
        )
    acct = raw["account"]
    return Catalog(
        cpu_architectures=archs,
        device_types=device_types,
        applications=tuple(apps),
        download_sizes={str(k): int(v) for k, v in raw.get("download_sizes", {}).items()},
        account=Account(
            int(acct["user_id"]), int(acct["actor_id"]), acct["username"], acct["email"]
        ),
        endpoints=raw["endpoints"],
    )
