"""device-type.json, device contracts and logos for the sandbox's device types.

The same device-type.json goes into a synthesized image's boot partition and (with `buildId`)
out of `/device-types/v1`. Imports only the standard library and flasher.sandbox.catalog.
"""

from __future__ import annotations

import base64
from typing import Any

from flasher.sandbox.catalog import CatalogDeviceType

_NETWORK_GROUP: dict[str, Any] = {
    "isGroup": True,
    "name": "network",
    "message": "Network",
    "options": [
        {
            "message": "Network Connection",
            "name": "network",
            "type": "list",
            "choices": ["ethernet", "wifi"],
        },
        {"message": "Wifi SSID", "name": "wifiSsid", "type": "text", "when": {"network": "wifi"}},
        {
            "message": "Wifi Passphrase",
            "name": "wifiKey",
            "type": "password",
            "when": {"network": "wifi"},
        },
    ],
}

_ADVANCED_GROUP: dict[str, Any] = {
    "isGroup": True,
    "isCollapsible": True,
    "collapsed": True,
    "name": "advanced",
    "message": "Advanced",
    "options": [
        {
            "message": "Check for updates every X minutes",
            "name": "appUpdatePollInterval",
            "type": "number",
            "min": 10,
            "default": 10,
        }
    ],
}


def artifact_name(dt: CatalogDeviceType, image_type: str) -> str:
    """The build artifact's file name, e.g. balena-image-flasher-intel-nuc.balenaos-img."""
    flavour = "balena-image-flasher" if image_type == "flasher" else "balena-image"
    return f"{flavour}-{dt.slug}.balenaos-img"


def yocto_section(dt: CatalogDeviceType) -> dict[str, Any]:
    default = dt.default_image_type
    yocto: dict[str, Any] = {
        "machine": dt.slug,
        "image": "balena-image-flasher" if default == "flasher" else "balena-image",
        "fstype": "balenaos-img",
        "version": dt.yocto_version,
    }
    if "flasher" in dt.image_types and "raw" in dt.image_types:
        # Boards shipping both kinds name the raw artifact as the main one (generic-amd64 does).
        yocto["deployArtifact"] = artifact_name(dt, "raw")
        yocto["deployFlasherArtifact"] = artifact_name(dt, "flasher")
        yocto["deployRawArtifact"] = artifact_name(dt, "raw")
    else:
        yocto["deployArtifact"] = artifact_name(dt, default)
    yocto["compressed"] = True
    return yocto


def device_type_json(dt: CatalogDeviceType, *, build_id: str | None = None) -> dict[str, Any]:
    """The device-type.json manifest; `build_id` is added as the API does for /device-types/v1."""
    manifest: dict[str, Any] = {
        "version": 1,
        "slug": dt.slug,
        "aliases": list(dict.fromkeys((dt.slug, *dt.aliases))),
        "name": dt.name,
        "arch": dt.arch,
        "state": dt.state,
        "instructions": _instructions(dt),
        "gettingStartedLink": f"https://docs.balena.io/learn/getting-started/{dt.slug}/python/",
        "options": [_NETWORK_GROUP, _ADVANCED_GROUP],
        "yocto": yocto_section(dt),
        "configuration": {"config": {"partition": {"primary": 1}, "path": "/config.json"}},
        "initialization": {
            "options": [{"message": "Select a drive", "type": "drive", "name": "drive"}],
            "operations": [{"command": "burn"}],
        },
    }
    if build_id is not None:
        manifest["buildId"] = build_id
        manifest["logoUrl"] = logo_data_uri(dt)
    return manifest


def _instructions(dt: CatalogDeviceType) -> list[str]:
    if dt.default_image_type == "flasher":
        return [
            "Write the OS file you downloaded to your USB key.",
            f"Insert the USB key into the {dt.name} and power it on.",
            "The device writes balenaOS to its internal storage and shuts down.",
            "Remove the USB key and power the device on again.",
        ]
    return [
        "Write the OS file you downloaded to your SD card.",
        f"Insert the SD card into the {dt.name} and connect power.",
    ]


def contract(dt: CatalogDeviceType) -> dict[str, Any]:
    """The hw.device-type contract, as the API stores it in device_type.contract."""
    data: dict[str, Any] = {
        "arch": dt.arch,
        "hdmi": dt.slug != "qemux86-64",
        "led": dt.slug.startswith("raspberry"),
        "connectivity": dict(dt.connectivity),
        "storage": {"internal": dt.media.get("defaultBoot") == "internal"},
        "media": dict(dt.media),
        "is_private": dt.is_private,
    }
    if dt.flash_protocol:
        data["flashProtocol"] = dt.flash_protocol
    return {
        "slug": dt.slug,
        "version": "1",
        "type": "hw.device-type",
        "aliases": [a for a in dt.aliases if a != dt.slug],
        "name": dt.name,
        "assets": {"logo": {"url": f"./{dt.slug}.svg", "name": "logo"}},
        "data": data,
    }


def logo_data_uri(dt: CatalogDeviceType) -> str:
    """A small SVG badge with the type's initials, as a data: URI like the API's `logo`."""
    initials = "".join(w[0] for w in dt.slug.replace("-", " ").split()[:3]).upper()
    hue = sum(dt.slug.encode()) % 360
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
        f'<rect width="64" height="64" rx="12" fill="hsl({hue},55%,42%)"/>'
        '<text x="32" y="40" font-family="sans-serif" font-size="20" text-anchor="middle" '
        f'fill="#fff">{initials}</text></svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
