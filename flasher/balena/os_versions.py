"""balenaOS host-app releases → OsVersion values, as the balena SDKs describe them.

The API keeps one host app per device type and OS line (default, ESR); each release of it is an
OS version. This module builds the pine query for them and turns the answer into
flasher.models.OsVersion values: newest first in balena order, with the OS type (the app's
`release-policy` tag), the ESR line (the release's `phase`, else the app's esr-* tags), the
version without its variant, the meta-balena version it is based on, and one recommended
version per OS type (the newest that is not a development image, not a prerelease, not
invalidated and has no known issue).

Imports flasher.balena.versions and flasher.models; no I/O.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from flasher.balena import versions
from flasher.balena.pine import Options, merge_options
from flasher.models import OsVersion

ReleaseFilter = Literal["supported", "include_draft", "all"]

OS_TYPE_DEFAULT = "default"
OS_TYPE_ESR = "esr"

_RELEASE_POLICY_TAG = "release-policy"
_ESR_LINE_TAGS = (("next", "esr-next"), ("current", "esr-current"), ("sunset", "esr-sunset"))
_VARIANT_TAG = "variant"
_VERSION_TAG = "version"
_BASED_ON_TAG = "meta-balena-base"
_VARIANT_NAMES = {"production": "prod", "development": "dev"}

_BASE_RELEASE_OPTIONS: Mapping[str, Any] = {
    # is_final and is_invalidated go beyond the SDK's selection so that values can report them.
    "$select": [
        "id",
        "known_issue_list",
        "raw_version",
        "variant",
        "phase",
        "is_final",
        "is_invalidated",
    ],
    "$expand": {"release_tag": {"$select": ["tag_key", "value"]}},
}

_RELEASE_FILTERS: Mapping[ReleaseFilter, Mapping[str, Any] | None] = {
    "supported": {"is_final": True, "is_invalidated": False, "status": "success"},
    "include_draft": {"is_invalidated": False, "status": "success"},
    "all": None,
}


def host_apps_query(
    device_types: Sequence[str], release_filter: ReleaseFilter, extra: Options | None = None
) -> dict[str, Any]:
    """Pine options for the host apps of `device_types` with their releases expanded."""
    release_options = merge_options(_BASE_RELEASE_OPTIONS, extra)
    convenience = _RELEASE_FILTERS[release_filter]
    if convenience is not None:
        release_options = merge_options(release_options, {"$filter": convenience})
    return {
        "$select": "is_for__device_type",
        "$expand": {
            "application_tag": {"$select": ["tag_key", "value"]},
            "is_for__device_type": {"$select": "slug"},
            "owns__release": release_options,
        },
        "$filter": {
            "is_host": True,
            "is_for__device_type": {
                "$any": {"$alias": "dt", "$expr": {"dt": {"slug": {"$in": list(device_types)}}}}
            },
        },
    }


def _tags(rows: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for row in rows or []:
        if isinstance(row, dict) and isinstance(row.get("tag_key"), str):
            out[row["tag_key"]] = str(row.get("value", ""))
    return out


def release_line(
    phase: str | None, version: str, os_type: str, app_tags: Mapping[str, str]
) -> str | None:
    """The ESR line of a release: next, current, sunset, outdated, or None for default OS."""
    if phase is None:
        # Every patch of an ESR minor belongs to the line its esr-* tag names.
        for line, tag in _ESR_LINE_TAGS:
            line_range = app_tags.get(tag)
            if line_range and versions.satisfies(version, f"^{line_range}"):
                return line
        if os_type.lower() == OS_TYPE_ESR:
            return "outdated"
        return None
    return "outdated" if phase == "end-of-life" else phase


def _os_version(
    release: Mapping[str, Any], device_type: str, app_tags: Mapping[str, str]
) -> OsVersion | None:
    tags = _tags(release.get("release_tag"))
    raw_version = str(release.get("raw_version") or "")
    variant = release.get("variant") or None
    parsed = None if raw_version.startswith("0.0.0") else versions.parse(raw_version)
    if parsed is None:
        # Releases from before raw_version existed carry their version in tags.
        tag_variant = tags.get(_VARIANT_TAG)
        if tag_variant is not None:
            variant = _VARIANT_NAMES.get(tag_variant, tag_variant)
        stripped = tags.get(_VERSION_TAG)
        if stripped is None:
            return None
        raw_version = ".".join(p for p in (stripped, variant) if p)
    else:
        build = ".".join(b for b in parsed.build if b != release.get("variant"))
        stripped = "+".join(p for p in (parsed.version, build) if p)
    os_type = app_tags.get(_RELEASE_POLICY_TAG, OS_TYPE_DEFAULT)
    phase = release.get("phase")
    known_issue = release.get("known_issue_list")
    return OsVersion(
        raw_version=raw_version,
        device_type=device_type,
        id=release.get("id") if isinstance(release.get("id"), int) else None,
        variant=variant if isinstance(variant, str) else None,
        os_type=os_type,
        line=release_line(phase if isinstance(phase, str) else None, stripped, os_type, app_tags),
        known_issue=known_issue if isinstance(known_issue, str) and known_issue else None,
        stripped_version=stripped,
        based_on_version=tags.get(_BASED_ON_TAG, stripped),
        is_final=bool(release.get("is_final", True)),
        is_invalidated=bool(release.get("is_invalidated", False)),
    )


def _recommendable(version: OsVersion) -> bool:
    return (
        version.variant != "dev"
        and not version.known_issue
        and not version.is_invalidated
        and not versions.prerelease(version.raw_version)
    )


def mark_recommended(ordered: Iterable[OsVersion]) -> list[OsVersion]:
    """`ordered` (newest first) with the first recommendable version of each OS type marked."""
    seen: set[str] = set()
    out: list[OsVersion] = []
    for version in ordered:
        if version.os_type not in seen and _recommendable(version):
            seen.add(version.os_type)
            version = dataclasses.replace(version, is_recommended=True)
        out.append(version)
    return out


def sort_newest_first(items: Iterable[OsVersion]) -> list[OsVersion]:
    def order(a: OsVersion, b: OsVersion) -> int:
        return versions.rcompare(a.raw_version, b.raw_version)

    return sorted(items, key=functools.cmp_to_key(order))


def versions_from_host_apps(host_apps: Iterable[Mapping[str, Any]]) -> dict[str, list[OsVersion]]:
    """OS versions per device-type slug, newest first, recommended ones marked."""
    found: dict[str, list[OsVersion]] = {}
    for app in host_apps:
        device_types = app.get("is_for__device_type")
        first = device_types[0] if isinstance(device_types, list) and device_types else None
        slug = first.get("slug") if isinstance(first, dict) else None
        if not isinstance(slug, str) or not slug:
            continue
        app_tags = _tags(app.get("application_tag"))
        bucket = found.setdefault(slug, [])
        for release in app.get("owns__release") or []:
            if isinstance(release, dict):
                version = _os_version(release, slug, app_tags)
                if version is not None:
                    bucket.append(version)
    return {slug: mark_recommended(sort_newest_first(items)) for slug, items in found.items()}
