"""The files of a balenaOS boot partition, for the test image builder.

config.json, device-type.json (with the network/advanced questions, the yocto section and the
config partition), os-release, bootloader stand-ins, overlays/ and system-connections/.
"""

from __future__ import annotations

import json
import random

DEVICE_NAMES = {"raspberrypi4-64": "Raspberry Pi 4 (using 64bit OS)"}


def text_bytes(rng: random.Random, size: int) -> bytes:
    """Deterministic text-like (compressible) filler."""
    words = [b"balena", b"engine", b"supervisor", b"config", b"=", b"0x1f", b"\n", b"usr/lib"]
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(words, k=256))
    return bytes(out[:size])


def default_boot_files(
    device_type: str, os_version: str, *, flasher: bool = False, variant: str = "prod"
) -> dict[str, bytes]:
    """What a balenaOS boot partition carries, with small bootloader stand-ins."""
    rng = random.Random(f"boot-{device_type}-{os_version}")
    config = {"deviceType": device_type, "persistentLogging": False}
    image = "balena-image-flasher" if flasher else "balena-image"
    device_type_json = {
        "version": 1,
        "slug": device_type,
        "aliases": [device_type],
        "name": DEVICE_NAMES.get(device_type, device_type),
        "arch": "aarch64",
        "state": "released",
        "options": [
            {
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
                    {
                        "message": "Wifi SSID",
                        "name": "wifiSsid",
                        "type": "text",
                        "when": {"network": "wifi"},
                    },
                    {
                        "message": "Wifi Passphrase",
                        "name": "wifiKey",
                        "type": "password",
                        "when": {"network": "wifi"},
                    },
                ],
            },
            {
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
            },
        ],
        "yocto": {
            "machine": device_type,
            "image": image,
            "fstype": "balenaos-img",
            "version": "yocto-kirkstone",
            "deployArtifact": f"{image}-{device_type}.balenaos-img",
            "compressed": True,
        },
        "configuration": {"config": {"partition": {"primary": 1}, "path": "/config.json"}},
        "initialization": {
            "options": [{"message": "Select a drive", "type": "drive", "name": "drive"}],
            "operations": [{"command": "burn"}],
        },
    }
    variant_name = "Development" if variant == "dev" else "Production"
    os_release = (
        f'ID="balena-os"\nNAME="balenaOS"\nVERSION="{os_version}"\nVERSION_ID="{os_version}"\n'
        f'PRETTY_NAME="balenaOS {os_version}"\nMACHINE="{device_type}"\n'
        f'VARIANT="{variant_name}"\nVARIANT_ID={variant}\n'
        f'META_BALENA_VERSION="{os_version.split("+")[0]}"\nBALENA_BOARD_REV="1a2b3c4"\n'
        f'SLUG="{device_type}"\n'
    )
    files = {
        "config.json": (json.dumps(config) + "\n").encode(),
        "device-type.json": (json.dumps(device_type_json, indent=2) + "\n").encode(),
        "os-release": os_release.encode(),
        "image-version-info": f"balenaOS {os_version}\n".encode(),
        image: f"{image}\n".encode(),
        "config.txt": b"arm_64bit=1\nenable_uart=1\ndisable_splash=1\ngpu_mem=16\n",
        "cmdline.txt": b"dwc_otg.lpm_enable=0 console=serial0,115200 rootwait\n",
        "start4.elf": rng.randbytes(96 * 1024),
        "fixup4.dat": rng.randbytes(5 * 1024),
        "kernel8.img": rng.randbytes(160 * 1024),
        "bcm2711-rpi-4-b.dtb": text_bytes(rng, 48 * 1024),
        "splash/balena-logo.png": b"\x89PNG\r\n\x1a\n" + rng.randbytes(3000),
        "system-connections/balena-sample.ignore": (
            b"[connection]\nid=balena-sample\ntype=wifi\n\n[wifi]\nmode=infrastructure\n"
            b"ssid=My_Wifi_Ssid\n\n[wifi-security]\nauth-alg=open\nkey-mgmt=wpa-psk\n"
            b"psk=super_secret_wifi_password\n\n[ipv4]\nmethod=auto\n\n[ipv6]\n"
            b"addr-gen-mode=stable-privacy\nmethod=auto\n"
        ),
        "system-connections/README.ignore": (
            b"Files in this folder are NetworkManager connection profiles; files ending in\n"
            b".ignore are skipped.\n"
        ),
    }
    for i in range(6):
        files[f"overlays/overlay{i}.dtbo"] = text_bytes(rng, 1500 + 700 * i)
    return files
