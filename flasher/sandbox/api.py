"""The sandbox's non-pine endpoints: /device-types/v1, download sizes, /download-config,
/download, /config and whoami, with the balena API's status codes and messages.

HTTP-free: handlers take decoded parameters and return JSON values or an Artifact, raising
ApiProblem(status, message) for errors. Provisioning keys are 32 alphanumerics from a seeded
generator, so a sandbox started with the same seed hands out the same sequence of keys.
Imports the standard library and flasher's sandbox, balena.config/versions, image.network
and models modules; never requests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flasher.balena import versions
from flasher.balena.config import config_json_bytes
from flasher.image.network import render_keyfiles
from flasher.models import DeviceConfig, NetworkKind, NetworkSettings, Secret, StaticIPv4
from flasher.sandbox.artifacts import FILE_TYPES, Artifact, ImageStore
from flasher.sandbox.catalog import Application, Catalog, CatalogDeviceType, Release
from flasher.sandbox.images import ImageSpec
from flasher.sandbox.manifest import device_type_json

_ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_SLUG = re.compile(r"^[\w-]+$")
_TRUE = (True, "true", "on", "1", 1)


class ApiProblem(Exception):
    """An error answer: HTTP `status` and the API's plain-text message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _flag(value: Any) -> bool:
    return value in _TRUE


class SandboxApi:
    def __init__(self, catalog: Catalog, store: ImageStore, *, seed: int = 0) -> None:
        self.catalog = catalog
        self.store = store
        self._seed = str(seed).encode()
        self._keys_issued = 0
        self._key_lock = threading.Lock()
        # Provisioning keys handed out, and their fleet (device registration checks them).
        self.issued_keys: dict[str, int] = {}

    # -- device types ------------------------------------------------------------------------

    def device_types_v1(self) -> list[dict[str, Any]]:
        return [self._manifest(dt) for dt in self.catalog.device_types]

    def device_type_v1(self, slug: str) -> dict[str, Any]:
        dt = self.catalog.device_type(slug)
        if dt is None:
            raise ApiProblem(404, f"Unknown device type {slug}")
        return self._manifest(dt)

    def _manifest(self, dt: CatalogDeviceType) -> dict[str, Any]:
        latest = self.catalog.latest_os_release(dt.slug)
        return device_type_json(dt, build_id=latest.raw_version if latest else "")

    def images(self, slug: str) -> dict[str, Any]:
        """The legacy image listing (the SDK's old getSupportedVersions reads it): the default
        line's available versions newest first, and the newest of them as `latest`."""
        if not _SLUG.match(slug):
            raise ApiProblem(400, "Invalid device type")
        dt = self.catalog.device_type(slug)
        if dt is None:
            raise ApiProblem(404, f"Unknown device type {slug}")
        releases = self.catalog.os_releases(dt.slug, os_type="default")
        return {
            "versions": [r.raw_version for r in releases],
            "latest": releases[0].raw_version if releases else None,
        }

    def download_size(self, slug: str, version: str) -> dict[str, int]:
        if not _SLUG.match(slug):
            raise ApiProblem(400, "Invalid device type")
        dt = self.catalog.device_type(slug)
        if dt is None:
            raise ApiProblem(404, f"Unknown device type {slug}")
        release = self._release(dt, version)
        if release is None or versions.is_esr(release.raw_version):
            raise ApiProblem(404, f"Device {dt.slug} not found for {version} version")
        size = self.catalog.download_sizes.get(f"{dt.slug}/{release.raw_version}")
        if size is None:
            spec = ImageSpec(dt, release, dt.default_image_type)
            size = self.store.stock(spec).path.stat().st_size
        return {"size": size}

    def _release(self, dt: CatalogDeviceType, version: str) -> Release | None:
        if version == "latest":
            return self.catalog.latest_os_release(dt.slug)
        wanted = versions.normalize(version)
        return self.catalog.os_release(dt.slug, wanted) or self.catalog.os_release(dt.slug, version)

    # -- config ------------------------------------------------------------------------------

    def public_config(self) -> dict[str, Any]:
        return {
            "deployment": "sandbox",
            "deviceUrlsBase": "balena-devices.invalid",
            "adminUrl": "https://admin.balena-cloud.invalid",
            "gitServerUrl": "git.balena-cloud.invalid",
            "ga": None,
            "mixpanelToken": self.catalog.endpoints.get("mixpanelToken"),
            "intercomAppId": None,
            "recurlyPublicKey": None,
            "DEVICE_ONLINE_ICON": "data:image/svg+xml;base64,",
            "DEVICE_OFFLINE_ICON": "data:image/svg+xml;base64,",
            "signupCodeRequired": False,
            "supportedSocialProviders": [],
        }

    def whoami(self) -> dict[str, Any]:
        account = self.catalog.account
        return {
            "id": account.actor_id,
            "actorType": "user",
            "actorTypeId": account.user_id,
            "username": account.username,
            "email": account.email,
        }

    def new_provisioning_key(self) -> str:
        """The next key of this sandbox's seeded sequence: 32 alphanumerics."""
        with self._key_lock:
            self._keys_issued += 1
            counter = self._keys_issued
        stream = b""
        block = 0
        while len(stream) < 32:
            msg = f"provisioning-key:{counter}:{block}".encode()
            stream += hmac.new(self._seed, msg, hashlib.sha256).digest()
            block += 1
        return "".join(_ALPHANUMERIC[b % len(_ALPHANUMERIC)] for b in stream[:32])

    def _fleet(self, app_id: Any) -> Application:
        try:
            number = int(app_id)
        except (TypeError, ValueError):
            raise ApiProblem(400, "An appId is required.") from None
        app = self.catalog.application(number)
        if app is None or app.is_host or app.slug.startswith("balena_os/"):
            raise ApiProblem(404, "Application not found")
        return app

    def download_config(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """POST /download-config for the sandbox user (the caller checked authentication)."""
        if params.get("appId") in (None, ""):
            raise ApiProblem(400, "An appId is required.")
        app = self._fleet(params["appId"])
        version = params.get("version")
        if not version:
            raise ApiProblem(400, "A version is required.")
        parsed = versions.parse(str(version))
        if parsed is None:
            raise ApiProblem(400, f"Invalid version: {version}")
        if not versions.gt(str(version), "1.2.0"):
            raise ApiProblem(
                400, "balenaOS versions <= 1.2.0 are no longer supported, please update"
            )
        dt = self.catalog.device_type(str(params.get("deviceType") or app.device_type))
        if dt is None:
            raise ApiProblem(400, f"Unknown device type {params.get('deviceType')}")
        expiry = params.get("provisioningKeyExpiryDate")
        if expiry:
            try:
                datetime.fromisoformat(str(expiry).replace("Z", "+00:00"))
            except ValueError:
                raise ApiProblem(400, "provisioningKeyExpiryDate must be a date") from None
        poll = params.get("appUpdatePollInterval")
        try:
            poll_ms = 60000 if poll in (None, "") else int(str(poll)) * 60000
        except ValueError:
            raise ApiProblem(400, "appUpdatePollInterval must be a number") from None
        if poll_ms < 0:
            raise ApiProblem(400, "appUpdatePollInterval must not be negative")
        ep = self.catalog.endpoints
        config: dict[str, Any] = {
            "applicationId": app.id,
            "deviceType": dt.slug,
            "userId": self.catalog.account.user_id,
            "appUpdatePollInterval": poll_ms,
            "listenPort": ep["listenPort"],
            "vpnPort": ep["vpnPort"],
            "apiEndpoint": ep["apiEndpoint"],
            "vpnEndpoint": ep["vpnEndpoint"],
            "registryEndpoint": ep["registryEndpoint"],
            "deltaEndpoint": ep["deltaEndpoint"],
            "mixpanelToken": ep["mixpanelToken"],
            "apiKey": self.new_provisioning_key(),
        }
        self.issued_keys[config["apiKey"]] = app.id
        if params.get("network") == "wifi":
            config["wifiSsid"] = params.get("wifiSsid") or ""
            config["wifiKey"] = params.get("wifiKey") or ""
        if parsed.major < 2:
            config.update(_connman_files(params))
        dev = params.get("developmentMode")
        if _flag(dev) or (dev is None and str(version).endswith(".dev")):
            config["developmentMode"] = True
        if _flag(params.get("secureboot")):
            config["installer"] = {"secureboot": True}
        return config

    # -- downloads ---------------------------------------------------------------------------

    def download(self, params: Mapping[str, Any], *, authenticated: bool) -> Artifact:
        """The file /download sends for these parameters (query string or JSON body)."""
        slug = str(params.get("deviceType") or "")
        version = str(params.get("version") or "latest").replace(" ", "+")
        file_type = str(params.get("fileType") or ".img")
        if not file_type.startswith("."):
            file_type = "." + file_type
        if file_type not in FILE_TYPES:
            raise ApiProblem(
                400, f"Invalid fileType {params.get('fileType')}: use .img, .zip or .gz"
            )
        if not slug:
            raise ApiProblem(400, "A deviceType is required.")
        dt = self.catalog.device_type(slug)
        image_type = str(params.get("imageType") or (dt.default_image_type if dt else "raw"))
        if image_type not in ("raw", "flasher"):
            raise ApiProblem(400, f"Invalid imageType {image_type}: use raw or flasher")
        release = self._release(dt, version) if dt is not None else None
        if dt is None or release is None or image_type not in dt.image_types:
            raise ApiProblem(
                404,
                f"No image found for device type {slug}, version {version}, "
                f"and image type {image_type}",
            )
        if versions.is_esr(release.raw_version) and not authenticated:
            raise ApiProblem(401, "Downloading ESR images requires authentication")
        spec = ImageSpec(dt, release, image_type, _flag(params.get("developmentMode")))
        if params.get("appId") in (None, ""):
            name = f"balena-cloud-{dt.slug}-{release.raw_version}.img"
            return self.store.artifact(spec, file_type, filename=name)
        if not authenticated:
            raise ApiProblem(401, "Unauthorized")
        app = self._fleet(params["appId"])
        config = self.download_config(
            {**params, "version": release.raw_version, "deviceType": dt.slug}
        )
        cfg = DeviceConfig(
            device_type=dt.slug,
            os_version=release.raw_version,
            network=_network(params),
            base_config=config,
        )
        supervisor = self._supervisor_version(dt)
        name = f"balena-cloud-{app.app_name}-{dt.slug}-{release.raw_version}{supervisor}.img"
        return self.store.configured(
            spec,
            file_type,
            filename=name,
            config_json=config_json_bytes(cfg),
            keyfiles=render_keyfiles(cfg),
        )

    def _supervisor_version(self, dt: CatalogDeviceType) -> str:
        releases = [
            r
            for app in self.catalog.applications
            if app.slug == f"balena_os/{dt.arch}-supervisor"
            for r in app.releases
            if r.is_available
        ]
        newest = max(releases, key=lambda r: r.parsed, default=None)
        return f"-v{newest.raw_version}" if newest else ""


def _network(params: Mapping[str, Any]) -> NetworkSettings:
    """Network settings from the image maker's parameters (Wi-Fi and/or static IPv4)."""
    ipv4 = None
    if params.get("ip") and params.get("gateway"):
        ipv4 = StaticIPv4(
            str(params["ip"]), str(params.get("netmask") or "255.255.255.0"), str(params["gateway"])
        )
    if params.get("network") == "wifi" and params.get("wifiSsid"):
        key = params.get("wifiKey")
        return NetworkSettings(
            NetworkKind.WIFI,
            wifi_ssid=str(params["wifiSsid"]),
            wifi_key=Secret(str(key)) if key else None,
            ipv4=ipv4,
            open_network=not key,  # the image maker writes an open network when given no key
        )
    return NetworkSettings(NetworkKind.ETHERNET, ipv4=ipv4)


def _connman_files(params: Mapping[str, Any]) -> dict[str, Any]:
    """The OS-1 connman configuration the API adds for versions below 2.0."""
    ip, gateway = params.get("ip"), params.get("gateway")
    if ip and not gateway:
        raise ApiProblem(400, "Missing network gateway")
    netmask = params.get("netmask") or "255.255.255.0"
    static = f"\nIPv4 = {ip}/{netmask}/{gateway}" if ip else ""
    settings = (
        "[global]\nOfflineMode=false\nTimeUpdates=manual\n\n[WiFi]\nEnable=true\n"
        "Tethering=false\n\n[Wired]\nEnable=true\nTethering=false\n\n[Bluetooth]\n"
        "Enable=true\nTethering=false"
    )
    network = f"[service_home_ethernet]\nType = ethernet\nNameservers = 8.8.8.8,8.8.4.4{static}"
    if params.get("network") == "wifi":
        network += (
            f"\n\n[service_home_wifi]\nHidden = true\nType = wifi\n"
            f"Name = {params.get('wifiSsid') or ''}\n"
            f"Passphrase = {params.get('wifiKey') or ''}\n"
            f"Nameservers = 8.8.8.8,8.8.4.4{static}"
        )
    return {
        "connectivity": "connman",
        "files": {"network/settings": settings, "network/network.config": network},
    }
