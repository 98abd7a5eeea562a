"""The sandbox's devices: a fixed set of fake supervisors and their rows in the pine `device`
resource, as the balena API shapes them.

    name            fleet          kind
    kitchen-pi      demo-fleet     managed, global key, one service (main)
    hall-pi         demo-fleet     managed, global key, one service (main)
    locked-pi       demo-fleet     managed, an update lock held by its app
    cellar-pi       demo-fleet     registered but offline (not on the VPN)
    attic-pi        demo-fleet     online for the API but its supervisor does not answer
    gateway-multi   gateway-fleet  managed, three services, an app-scoped key too
    gateway-local   gateway-fleet  local mode: every endpoint answers without a key
    bench-nuc       (none)         unmanaged (no cloud): not listed by the API

Keys are derived from the uuid (`sandbox_key`), so they are the same on every run; they are
fakes and guard nothing. The supervisors start on first use, each on its own 127.0.0.1 port.
Standard library only (plus flasher.sandbox modules).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any

from flasher.sandbox.supervisor_fake import FakeApp, FakeDeviceSpec, FakeService, FakeSupervisor

DEMO_FLEET = (1958513, "demo-fleet", "2f8a7c9e41d34b5f8a6e0c1d2b3a4f59")
GATEWAY_FLEET = (1958514, "gateway-fleet", "8c1e5d7a9b2f4c6e8d0a1b3c5e7f9a2d")
_CREATED_AT = "2026-11-30T09:10:00.000Z"
DEVICE_FIELDS = (
    "id", "uuid", "device_name", "created_at", "modified_at", "note", "local_id", "status",
    "is_online", "is_connected_to_vpn", "api_heartbeat_state", "last_connectivity_event",
    "last_vpn_event", "is_locked_until__date", "is_web_accessible", "is_active", "is_frozen",
    "public_address", "ip_address", "mac_address", "api_port", "os_version", "os_variant",
    "supervisor_version", "provisioning_progress", "provisioning_state", "download_progress",
    "overall_status", "overall_progress", "is_undervolted",
)  # fmt: skip


def _hex(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def sandbox_uuid(name: str) -> str:
    return _hex(f"flasher-sandbox-device:{name}", 32)


def sandbox_key(uuid: str, scope: str = "global") -> str:
    """The fake's supervisor API key (a fake: printed in docs, it guards nothing)."""
    return _hex(f"flasher-sandbox-key:{scope}:{uuid}", 32)


def _service(app_id: int, name: str, n: int) -> FakeService:
    release_id = 3000000 + app_id % 1000
    return FakeService(
        name=name,
        image_id=5000000 + app_id % 1000 * 10 + n,
        service_id=29000 + n,
        container_id=_hex(f"container:{app_id}:{name}", 64),
        release_id=release_id,
        image=f"registry2.balena-cloud.com/v2/{_hex(f'image:{app_id}:{name}', 32)}@sha256:"
        + _hex(f"digest:{app_id}:{name}", 64),
    )


def _app(fleet: tuple[int, str, str], services: tuple[str, ...]) -> FakeApp:
    app_id, name, uuid = fleet
    return FakeApp(
        app_id=app_id,
        name=name,
        uuid=uuid,
        commit=_hex(f"commit:{app_id}", 32),
        services=[_service(app_id, s, i) for i, s in enumerate(services, 1)],
        env={"GREETING": "hello"},
    )


@dataclass(frozen=True)
class SandboxDevice:
    """A device of the set: its supervisor's spec and what the API says about it."""

    id: int
    spec: FakeDeviceSpec
    fleet: tuple[int, str, str] | None
    online: bool = True
    listening: bool = True
    os_variant: str = "prod"


def _device(
    n: int,
    name: str,
    fleet: tuple[int, str, str] | None,
    device_type: str,
    arch: str,
    services: tuple[str, ...],
    **options: Any,
) -> SandboxDevice:
    uuid = sandbox_uuid(name)
    online = options.pop("online", True)
    listening = options.pop("listening", True)
    variant = options.pop("os_variant", "prod")
    local = options.get("local_mode", False) or options.get("unmanaged", False)
    spec = FakeDeviceSpec(
        uuid=uuid,
        name=name,
        device_type=device_type,
        arch=arch,
        os_version=options.pop("os_version", "balenaOS 6.5.50+rev8"),
        supervisor_version=options.pop("supervisor_version", "17.0.3"),
        apps=[_app(fleet, services)] if fleet else [],
        api_key=None if local else sandbox_key(uuid),
        **options,
    )
    return SandboxDevice(7842800 + n, spec, fleet, online, listening, variant)


def default_devices() -> list[SandboxDevice]:
    multi = _device(
        6, "gateway-multi", GATEWAY_FLEET, "generic-amd64", "amd64", ("main", "frontend", "proxy")
    )
    multi.spec.app_keys[sandbox_key(multi.spec.uuid, "app")] = GATEWAY_FLEET[0]
    return [
        _device(1, "kitchen-pi", DEMO_FLEET, "raspberrypi4-64", "aarch64", ("main",)),
        _device(2, "hall-pi", DEMO_FLEET, "raspberrypi4-64", "aarch64", ("main",)),
        _device(
            3,
            "locked-pi",
            DEMO_FLEET,
            "raspberrypi4-64",
            "aarch64",
            ("main",),
            locked_apps={DEMO_FLEET[0]},
        ),
        _device(4, "cellar-pi", DEMO_FLEET, "raspberrypi4-64", "aarch64", ("main",), online=False),
        _device(
            5, "attic-pi", DEMO_FLEET, "raspberrypi4-64", "aarch64", ("main",), listening=False
        ),
        multi,
        _device(
            7,
            "gateway-local",
            GATEWAY_FLEET,
            "generic-amd64",
            "amd64",
            ("main",),
            local_mode=True,
            os_variant="dev",
            os_version="balenaOS 6.8.1",
        ),
        _device(8, "bench-nuc", None, "intel-nuc", "amd64", (), unmanaged=True),
    ]


class SandboxDevices:
    """The device set of one sandbox; supervisors start on first use and stop on `close()`."""

    def __init__(self, devices: list[SandboxDevice] | None = None) -> None:
        self.devices = devices if devices is not None else default_devices()
        self._fakes: dict[str, FakeSupervisor] = {}
        self._lock = threading.Lock()
        self._closed = False

    def by_name(self, name: str) -> SandboxDevice:
        for device in self.devices:
            if device.spec.name == name:
                return device
        raise KeyError(name)

    def supervisor(self, name: str) -> FakeSupervisor:
        """The running fake of device `name` (started now if needed)."""
        device = self.by_name(name)
        with self._lock:
            fake = self._fakes.get(name)
            if fake is None:
                fake = FakeSupervisor(device.spec)
                if device.listening and device.online and not self._closed:
                    fake.start()
                self._fakes[name] = fake
            return fake

    def start_all(self) -> list[tuple[SandboxDevice, FakeSupervisor]]:
        return [(d, self.supervisor(d.spec.name)) for d in self.devices]

    def registered(self) -> list[SandboxDevice]:
        """The devices the API knows (unmanaged ones are not registered)."""
        return [d for d in self.devices if d.fleet is not None]

    def pine_rows(self, device_type_ids: dict[str, int]) -> list[dict[str, Any]]:
        return [_pine_row(d, device_type_ids.get(d.spec.device_type)) for d in self.registered()]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            fakes = list(self._fakes.values())
        for fake in fakes:
            fake.close()


def _pine_row(device: SandboxDevice, device_type_id: int | None) -> dict[str, Any]:
    spec = device.spec
    online = device.online
    return {
        "id": device.id,
        "uuid": spec.uuid,
        "device_name": spec.name,
        "created_at": _CREATED_AT,
        "modified_at": _CREATED_AT,
        "note": None,
        "local_id": None,
        "status": "Idle" if online else "",
        "is_online": online,
        "is_connected_to_vpn": online,
        "api_heartbeat_state": "online" if online else "offline",
        "last_connectivity_event": _CREATED_AT,
        "last_vpn_event": _CREATED_AT,
        "is_locked_until__date": None,
        "is_web_accessible": False,
        "is_active": True,
        "is_frozen": False,
        "public_address": "203.0.113.10" if online else "",
        "ip_address": spec.ip_address if online else "",
        "mac_address": spec.mac_address,
        "api_port": 48484,
        "os_version": spec.os_version,
        "os_variant": device.os_variant,
        "supervisor_version": spec.supervisor_version,
        "provisioning_progress": None,
        "provisioning_state": "",
        "download_progress": None,
        "overall_status": "idle" if online else "disconnected",
        "overall_progress": None,
        "is_undervolted": False,
        "belongs_to__application": device.fleet[0] if device.fleet else None,
        "is_of__device_type": device_type_id,
    }
