"""The official balena Python SDK's device methods that go through the supervisor proxy, driven
against the sandbox: the sandbox's fake supervisors must see what a real device would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flasher.sandbox.devices import DEMO_FLEET, GATEWAY_FLEET
from flasher.sandbox.images import ImageScale
from flasher.sandbox.server import SandboxServer
from flasher.sandbox.supervisor_fake import FakeSupervisor

balena = pytest.importorskip(
    "balena", reason="balena-sdk is not installed (pip install balena-sdk)"
)

ON_DEVICE_ENV = ("BALENA_SUPERVISOR_ADDRESS", "BALENA_SUPERVISOR_API_KEY", "BALENA_APP_ID")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer.start(image_scale=ImageScale.tiny(), cache_dir=tmp_path / "c") as server:
        yield server


@pytest.fixture
def sdk(sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in (*ON_DEVICE_ENV, "BALENA_API_KEY", "BALENA_DEVICE_UUID"):
        monkeypatch.delenv(name, raising=False)
    options = {"balena_host": "sandbox.invalid", "data_directory": str(tmp_path / "sdk")}
    balena.Balena(options).settings.set("api_endpoint", sandbox.url + "/")
    client = balena.Balena(options)
    client.auth.login_with_token("sandbox-token")
    return client


def _device(sandbox: SandboxServer, name: str) -> tuple[str, FakeSupervisor]:
    return sandbox.devices.by_name(name).spec.uuid, sandbox.devices.supervisor(name)


def _last(fake: FakeSupervisor) -> tuple[str, str, Any]:
    seen = fake.requests[-1]
    return seen.method, seen.path, seen.body


def test_identify_blinks_the_device(sdk: Any, sandbox: SandboxServer) -> None:
    uuid, fake = _device(sandbox, "kitchen-pi")
    sdk.models.device.identify(uuid)
    assert _last(fake) == ("POST", "/v1/blink", None)
    assert fake.state.blinks == 1


def test_ping_reaches_the_supervisor(sdk: Any, sandbox: SandboxServer) -> None:
    uuid, fake = _device(sandbox, "kitchen-pi")
    sdk.models.device.ping(uuid)
    assert _last(fake) == ("GET", "/ping", None)


def test_get_supervisor_state_is_v1_device(sdk: Any, sandbox: SandboxServer) -> None:
    uuid, _fake = _device(sandbox, "kitchen-pi")
    state = sdk.models.device.get_supervisor_state(uuid)
    assert state["os_version"] == "balenaOS 6.5.50+rev8"
    assert state["status"] == "Idle"


def test_update_with_force(sdk: Any, sandbox: SandboxServer) -> None:
    uuid, fake = _device(sandbox, "kitchen-pi")
    sdk.models.device.update(uuid, force=True)
    assert _last(fake) == ("POST", "/v1/update", {"force": True})
    assert fake.state.updates == [True]


def test_restart_application_restarts_the_fleet_app(sdk: Any, sandbox: SandboxServer) -> None:
    uuid, fake = _device(sandbox, "hall-pi")
    sdk.models.device.restart_application(uuid)
    assert _last(fake) == ("POST", "/v1/restart", {"appId": DEMO_FLEET[0]})
    assert fake.state.restarts == [DEMO_FLEET[0]]


def test_purge_clears_the_app_data(sdk: Any, sandbox: SandboxServer) -> None:
    uuid, fake = _device(sandbox, "hall-pi")
    sdk.models.device.purge(uuid)
    assert _last(fake) == ("POST", "/v1/purge", {"appId": DEMO_FLEET[0]})
    assert fake.state.purges == [DEMO_FLEET[0]]


@pytest.mark.parametrize(
    ("method", "action", "status"),
    [("stop_service", "stop", "exited"), ("restart_service", "restart", "Running")],
)
def test_service_actions_by_image_id(
    sdk: Any, sandbox: SandboxServer, method: str, action: str, status: str
) -> None:
    uuid, fake = _device(sandbox, "gateway-multi")
    frontend = fake.state.apps[GATEWAY_FLEET[0]].services[1]
    getattr(sdk.models.device, method)(uuid, frontend.image_id)
    assert _last(fake) == (
        "POST",
        f"/v2/applications/{GATEWAY_FLEET[0]}/{action}-service",
        {"appId": GATEWAY_FLEET[0], "imageId": frontend.image_id},
    )
    assert frontend.status == status


def test_start_service_after_stop(sdk: Any, sandbox: SandboxServer) -> None:
    uuid, fake = _device(sandbox, "gateway-multi")
    main = fake.state.apps[GATEWAY_FLEET[0]].services[0]
    sdk.models.device.stop_service(uuid, main.image_id)
    sdk.models.device.start_service(uuid, main.image_id)
    assert main.status == "Running"
    assert [r.path.rsplit("/", 1)[1] for r in fake.requests[-2:]] == [
        "stop-service",
        "start-service",
    ]


def test_reboot_takes_the_device_down_and_back(sdk: Any, sandbox: SandboxServer) -> None:
    uuid, fake = _device(sandbox, "hall-pi")
    sdk.models.device.reboot(uuid)
    assert _last(fake) == ("POST", "/v1/reboot", {})
    deadline = time.monotonic() + 10
    while not (fake.state.boots == 2 and fake.up.is_set()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.state.boots == 2
    assert fake.up.is_set() and fake.state.last_power_action is None  # fresh state after boot


def test_shutdown_takes_the_device_down(sdk: Any, sandbox: SandboxServer) -> None:
    uuid, fake = _device(sandbox, "kitchen-pi")
    sdk.models.device.shutdown(uuid, force=True)
    assert _last(fake) == ("POST", "/v1/shutdown", {"force": True})
    assert fake.state.last_power_action == "shutdown"


def test_sdk_on_the_device_talks_to_the_supervisor_directly(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _uuid, fake = _device(sandbox, "kitchen-pi")
    monkeypatch.setenv("BALENA_SUPERVISOR_ADDRESS", fake.url)
    monkeypatch.setenv("BALENA_SUPERVISOR_API_KEY", fake.spec.api_key or "")
    monkeypatch.setenv("BALENA_APP_ID", str(DEMO_FLEET[0]))
    client = balena.Balena({"balena_host": "sandbox.invalid", "data_directory": str(tmp_path)})
    state = client.models.device.get_supervisor_state()
    assert state["supervisor_version"] == fake.spec.supervisor_version
    seen = fake.requests[-1]
    assert (seen.path, seen.key, seen.key_via) == ("/v1/device", fake.spec.api_key, "query")
