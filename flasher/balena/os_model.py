"""The balena SDK's OS model in Python: OS versions, downloads, sizes, config.json and updates.

`OsModel(session)` has every method of the SDK's `balena.models.os`, in snake_case, with the
SDK's semantics: device-type aliases resolve first (memoised) where the SDK resolves them, a
single slug answers with a list and a list of slugs with a {slug: list} dict, and versions are
ordered and matched with balena-semver rules (flasher.balena.versions). Answers are
flasher.models values; failures are FlasherErrors (unknown device type → CatalogError
"Invalid device type: X").

Imports flasher.balena.* (requests through the session); never Qt or the faces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload
from urllib.parse import quote

from flasher.balena import hup, versions
from flasher.balena.device_types import DeviceTypes
from flasher.balena.os_download import OsDownload
from flasher.balena.os_versions import (
    ReleaseFilter,
    host_apps_query,
    versions_from_host_apps,
)
from flasher.balena.pine import Options, merge_options
from flasher.balena.session import LOGIN_HINT, BalenaSession, is_not_found
from flasher.errors import CatalogError, ConfigError
from flasher.models import OsVersion, Secret

OsTypeFilter = Literal["default", "esr", "any"] | None

# OS architectures that also run containers built for the listed application architectures.
ARCH_COMPATIBILITY: Mapping[str, frozenset[str]] = {
    "aarch64": frozenset({"armv7hf", "rpi"}),
    "armv7hf": frozenset({"rpi"}),
}

_SLUG_RE = re.compile(r"^[\w-]+$")


@dataclass(frozen=True)
class OsUpdateTargets:
    """Where a device on `current` may update to; `current` is the listed form, if listed."""

    versions: tuple[str, ...]
    recommended: str | None
    current: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions": list(self.versions),
            "recommended": self.recommended,
            "current": self.current,
        }


def _os_type_matches(version: OsVersion, os_type: OsTypeFilter) -> bool:
    return os_type in (None, "any") or version.os_type == os_type


def _normalize_exact_version(version: str) -> str:
    """An exact version as the SDK accepts it for downloads: optional "v", then semver."""
    exact = version[1:] if version.startswith("v") else version
    if not versions.is_valid(exact) or not exact[:1].isdigit():
        raise ConfigError("version", f"'{version}' is not a balenaOS version (like 6.5.50+rev8)")
    return exact


class OsModel:
    """The OS model on one session. Results of unfiltered version queries are remembered."""

    def __init__(self, session: BalenaSession, device_types: DeviceTypes | None = None) -> None:
        self._session = session
        self.device_types = device_types or DeviceTypes(session)
        self._versions_cache: dict[
            tuple[tuple[str, ...], ReleaseFilter], dict[str, list[OsVersion]]
        ] = {}
        self._size_cache: dict[tuple[str, str], int] = {}

    def clear_cache(self) -> None:
        self._versions_cache.clear()
        self._size_cache.clear()

    # --- versions ---------------------------------------------------------------------------

    def _versions(
        self, device_types: Sequence[str], release_filter: ReleaseFilter, options: Options | None
    ) -> dict[str, list[OsVersion]]:
        if options:
            query = host_apps_query(device_types, release_filter, options)
            return versions_from_host_apps(self._session.pine_get("application", query))
        key = (tuple(sorted(set(device_types))), release_filter)
        if key not in self._versions_cache:
            query = host_apps_query(key[0], release_filter)
            self._versions_cache[key] = versions_from_host_apps(
                self._session.pine_get("application", query)
            )
        return self._versions_cache[key]

    @overload
    def get_all_os_versions(
        self, device_type: str, options: Options | None = None
    ) -> list[OsVersion]: ...

    @overload
    def get_all_os_versions(
        self, device_type: list[str] | tuple[str, ...], options: Options | None = None
    ) -> dict[str, list[OsVersion]]: ...

    def get_all_os_versions(
        self, device_type: str | Sequence[str], options: Options | None = None
    ) -> list[OsVersion] | dict[str, list[OsVersion]]:
        """Every OS version of the device type(s), drafts and invalidated ones included.

        `options` are extra pine options for the releases (a `$filter` is ANDed). Only
        canonical slugs match; unknown ones give [] / no key.
        """
        return self._by_device_type(device_type, "all", options)

    @overload
    def get_available_os_versions(
        self, device_type: str, *, include_draft: bool = False, options: Options | None = None
    ) -> list[OsVersion]: ...

    @overload
    def get_available_os_versions(
        self,
        device_type: list[str] | tuple[str, ...],
        *,
        include_draft: bool = False,
        options: Options | None = None,
    ) -> dict[str, list[OsVersion]]: ...

    def get_available_os_versions(
        self,
        device_type: str | Sequence[str],
        *,
        include_draft: bool = False,
        options: Options | None = None,
    ) -> list[OsVersion] | dict[str, list[OsVersion]]:
        """The usable OS versions (successful, not invalidated, final unless `include_draft`)."""
        return self._by_device_type(
            device_type, "include_draft" if include_draft else "supported", options
        )

    def _by_device_type(
        self,
        device_type: str | Sequence[str],
        release_filter: ReleaseFilter,
        options: Options | None,
    ) -> list[OsVersion] | dict[str, list[OsVersion]]:
        if isinstance(device_type, str):
            return list(self._versions([device_type], release_filter, options).get(device_type, []))
        found = self._versions(list(device_type), release_filter, options)
        return {slug: list(items) for slug, items in found.items()}

    def get_max_satisfying_version(
        self,
        device_type: str,
        version_or_range: str = "latest",
        os_type: OsTypeFilter = None,
    ) -> str | None:
        """The newest available version matching `version_or_range`, or None.

        `version_or_range`: "latest" (newest), "recommended" (the recommended one),
        "default" (recommended, else newest), an exact listed version (returned as is), or a
        node-semver range ("^6.0.0", "~2.80.3", ">=5 <6"). `os_type` "default" or "esr"
        restricts the OS line; None or "any" searches every line.
        """
        slug = self.device_types.resolve_slug(device_type)
        candidates = [
            v for v in self.get_available_os_versions(slug) if _os_type_matches(v, os_type)
        ]
        recommended = next((v.raw_version for v in candidates if v.is_recommended), None)
        newest = candidates[0].raw_version if candidates else None
        if version_or_range == "latest":
            return newest
        if version_or_range == "recommended":
            return recommended
        if version_or_range == "default":
            return recommended or newest
        raw_versions = [v.raw_version for v in candidates]
        if version_or_range in raw_versions:
            return version_or_range
        return versions.max_satisfying(raw_versions, version_or_range)

    # --- images -----------------------------------------------------------------------------

    def get_download_size(self, device_type: str, version: str = "latest") -> int:
        """The image download size in bytes, as the API estimates it (remembered per version)."""
        slug = self.device_types.resolve_slug(device_type)
        key = (slug, version)
        if key not in self._size_cache:
            if not _SLUG_RE.match(slug):
                raise CatalogError(f"Invalid device type: {slug}", device_type=slug)
            path = f"/device-types/v1/{slug}/images/{quote(version, safe='+')}/download-size"
            try:
                body = self._session.get_json(path)
            except CatalogError as err:
                if is_not_found(err):
                    raise CatalogError(
                        f"No download size known for {slug} {version}.",
                        hint="Check the version with 'flasher os versions'.",
                        device_type=slug,
                        version=version,
                    ) from None
                raise
            size = body.get("size") if isinstance(body, dict) else None
            if not isinstance(size, int | float) or isinstance(size, bool) or size < 0:
                raise CatalogError(
                    f"The API gave no usable download size for {slug} {version}.",
                    device_type=slug,
                    version=version,
                )
            self._size_cache[key] = int(size)
        return self._size_cache[key]

    def download(
        self,
        device_type: str,
        version: str = "latest",
        *,
        development_mode: bool | None = None,
        file_type: Literal[".img", ".zip", ".gz"] | None = None,
        image_type: Literal["raw", "flasher"] | None = None,
        app_id: int | None = None,
        app_update_poll_interval_min: int | None = None,
        network: Literal["ethernet", "wifi"] | None = None,
        wifi_ssid: str | None = None,
        wifi_key: Secret | None = None,
    ) -> OsDownload:
        """Start downloading an OS image; the caller streams and closes the answer.

        "latest" means the recommended default-line version, else the newest default-line one.
        Other versions must be exact ("v" prefix allowed). With `app_id` the server configures
        the image for that fleet (and the network options apply).
        """
        exact = None if version == "latest" else _normalize_exact_version(version)
        slug = self.device_types.resolve_slug(device_type)
        if exact is None:
            exact = self.get_max_satisfying_version(slug, "default", "default")
            if exact is None:
                raise CatalogError(
                    f"No image found for device type {slug}: it has no released OS version.",
                    device_type=slug,
                )
        params: dict[str, str] = {"deviceType": slug, "version": exact}
        optional: dict[str, Any] = {
            "developmentMode": development_mode,
            "fileType": file_type,
            "imageType": image_type,
            "appId": app_id,
            "appUpdatePollInterval": app_update_poll_interval_min,
            "network": network,
            "wifiSsid": wifi_ssid,
            "wifiKey": wifi_key.reveal() if wifi_key is not None else None,
        }
        for key, value in optional.items():
            if value is not None:
                params[key] = (
                    ("true" if value else "false") if isinstance(value, bool) else str(value)
                )
        try:
            response = self._session.request("GET", "/download", params=params, stream=True)
        except CatalogError as err:
            if is_not_found(err):
                kind = f", and image type {image_type}" if image_type else ""
                raise CatalogError(
                    f"No image found for device type {slug}, version {exact}{kind}.",
                    hint="List the versions with 'flasher os versions'.",
                    device_type=slug,
                    version=exact,
                ) from None
            raise
        return OsDownload(response, device_type=slug, version=exact)

    # --- config.json ------------------------------------------------------------------------

    def _fleet_id(self, fleet: int | str) -> int:
        if isinstance(fleet, int) or fleet.isdigit():
            rows = self._session.pine_get("application", {"$select": "id"}, entity_id=int(fleet))
        else:
            key = fleet.lower()
            rows = self._session.pine_get(
                "application",
                {"$select": "id", "$filter": {"$or": {"slug": key, "uuid": key}}},
            )
            if len(rows) > 1:
                raise CatalogError(
                    f"Fleet is ambiguous: {fleet}",
                    hint="Name the fleet by its full slug (org/fleet) or numeric id.",
                    fleet=str(fleet),
                )
        if not rows or not isinstance(rows[0].get("id"), int):
            # Private fleets are invisible to anonymous sessions, so say how to log in.
            hint = (
                "Check the fleet slug (org/fleet) or id, and that this account can see it."
                if self._session.authenticated
                else LOGIN_HINT
            )
            raise CatalogError(f"Fleet not found: {fleet}", hint=hint, fleet=str(fleet))
        return int(rows[0]["id"])

    def get_config(
        self,
        fleet: int | str,
        *,
        version: str,
        network: Literal["ethernet", "wifi"] = "ethernet",
        app_update_poll_interval_min: int | None = None,
        provisioning_key_name: str | None = None,
        provisioning_key_expiry_date: str | None = None,
        wifi_ssid: str | None = None,
        wifi_key: Secret | None = None,
        ip: str | None = None,
        gateway: str | None = None,
        netmask: str | None = None,
        device_type: str | None = None,
        development_mode: bool | None = None,
    ) -> dict[str, Any]:
        """The fleet's config.json from the API (POST /download-config).

        The answer holds a fresh provisioning key in `apiKey`: treat it as a secret.
        """
        if not version:
            raise ConfigError("version", "an OS version is required to generate config.json")
        fleet_id = self._fleet_id(fleet)
        body: dict[str, Any] = {"network": network, "version": version}
        optional: dict[str, Any] = {
            "appUpdatePollInterval": app_update_poll_interval_min,
            "provisioningKeyName": provisioning_key_name,
            "provisioningKeyExpiryDate": provisioning_key_expiry_date,
            "wifiSsid": wifi_ssid,
            "wifiKey": wifi_key.reveal() if wifi_key is not None else None,
            "ip": ip,
            "gateway": gateway,
            "netmask": netmask,
            "deviceType": device_type,
            "developmentMode": development_mode,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        body["appId"] = fleet_id
        try:
            # Each call mints a provisioning key; a blind repeat would mint a second one.
            config = self._session.post_json("/download-config", body, allow_retry=False)
        except CatalogError as err:
            if is_not_found(err):
                raise CatalogError(f"Fleet not found: {fleet}", fleet=str(fleet)) from None
            raise
        if not isinstance(config, dict):
            raise CatalogError(
                "The API answered /download-config with something else than a config.json object."
            )
        return config

    # --- updates ----------------------------------------------------------------------------

    def get_os_update_type(self, device_type: str, current: str, target: str) -> hup.UpdateType:
        """The update action ("balenahup" or "takeover"); hup.OsUpdateError when not possible."""
        return hup.get_hup_action_type(self.device_types.resolve_slug(device_type), current, target)

    def is_supported_os_update(self, device_type: str, current: str, target: str) -> bool:
        return hup.is_supported_os_update(
            self.device_types.resolve_slug(device_type), current, target
        )

    def get_supported_os_update_versions(
        self,
        device_type: str,
        current: str,
        *,
        os_type: OsTypeFilter = None,
        include_draft: bool = False,
    ) -> OsUpdateTargets:
        """The versions a device on `current` may update to, newest first.

        `os_type` None follows the line `current` is on (ESR for an ESR version, else the
        default line), as the JS SDK does: a device is never moved to another line unasked.
        "default" or "esr" names a line (a default-line device may move to ESR); "any" both.
        """
        current_parsed = versions.parse(current)
        if current_parsed is None:
            raise ConfigError("current_version", f"'{current}' is not a balenaOS version")
        if os_type is None:
            os_type = "esr" if current_parsed.is_esr else "default"
        slug = self.device_types.resolve_slug(device_type)
        available = self.get_available_os_versions(slug, include_draft=include_draft)
        listed_current = next(
            (v.raw_version for v in available if versions.compare(v.raw_version, current) == 0),
            None,
        )
        # ESR versions are based on default-line releases that can be older than the device's.
        check_base = not current_parsed.is_esr
        targets = [
            v.raw_version
            for v in available
            if _os_type_matches(v, os_type)
            and hup.is_supported_os_update(slug, current, v.raw_version)
            and (not check_base or hup.is_supported_os_update(slug, current, v.based_on_version))
        ]
        recommended = next((v for v in targets if not versions.prerelease(v)), None)
        return OsUpdateTargets(tuple(targets), recommended, listed_current)

    # --- architectures and supervisors ------------------------------------------------------

    def get_supervisor_releases_for_cpu_architecture(
        self, cpu_architecture: str | int, options: Options | None = None
    ) -> list[dict[str, Any]]:
        """Supervisor releases for an architecture slug or id, newest first (pine rows)."""
        if isinstance(cpu_architecture, int):
            arch_filter: Any = cpu_architecture
        else:
            arch_filter = {"$any": {"$alias": "c", "$expr": {"c": {"slug": cpu_architecture}}}}
        supervisor_app = {
            "$and": [
                {"a": {"slug": {"$startswith": "balena_os/"}}},
                {"a": {"slug": {"$endswith": "-supervisor"}}},
            ],
            "a": {
                "is_public": True,
                "is_host": False,
                "is_for__device_type": {
                    "$any": {
                        "$alias": "dt",
                        "$expr": {"dt": {"is_of__cpu_architecture": arch_filter}},
                    }
                },
            },
        }
        query = merge_options(
            {
                "$select": ["id", "raw_version", "known_issue_list"],
                "$filter": {
                    "status": "success",
                    "is_final": True,
                    "is_invalidated": False,
                    "semver_major": {"$gt": 0},
                    "belongs_to__application": {"$any": {"$alias": "a", "$expr": supervisor_app}},
                },
                "$orderby": [
                    {"semver_major": "desc"},
                    {"semver_minor": "desc"},
                    {"semver_patch": "desc"},
                    {"revision": "desc"},
                ],
            },
            options,
        )
        return self._session.pine_get("release", query)

    @staticmethod
    def is_architecture_compatible_with(
        os_architecture: str, application_architecture: str
    ) -> bool:
        """Whether an OS of one architecture runs containers built for the other."""
        return (
            os_architecture == application_architecture
            or application_architecture in ARCH_COMPATIBILITY.get(os_architecture, frozenset())
        )
