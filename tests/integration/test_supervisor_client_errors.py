"""The Supervisor API client's errors, against the sandbox's fake supervisors (real HTTP on
127.0.0.1): every error answer mapped to its typed error, locks, keys of the wrong scope, and a
device that is unreachable or silent."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from flasher.sandbox.devices import SandboxDevices, sandbox_key
from flasher.sandbox.supervisor_fake import FakeSupervisor
from flasher.supervisor.client import SupervisorClient
from flasher.supervisor.errors import (
    DeviceBadRequest,
    DeviceConflict,
    DeviceError,
    DeviceLocked,
    DeviceNotFound,
    DeviceUnauthorized,
    DeviceUnreachable,
    SupervisorFailed,
)
from flasher.supervisor.transport import DirectTransport
from tests.support.supervisor import DEMO, GATEWAY, client_for

ERRORS: list[tuple[str, str, Any, type[DeviceError], int, str]] = [
    # (id, device, call, error, status, words of the supervisor in the error)
    ("no-key", "kitchen-pi", lambda c: c.device(), DeviceUnauthorized, 401, "Unauthorized"),
    (
        "locked-reboot",
        "locked-pi",
        lambda c: c.reboot(),
        DeviceLocked,
        423,
        "Lockfile exists for { appId: 1958513, service: main }",
    ),
    (
        "locked-restart",
        "locked-pi",
        lambda c: c.restart_app(DEMO),
        DeviceLocked,
        423,
        "Lockfile exists",
    ),
    (
        "locked-hostname",
        "locked-pi",
        lambda c: c.set_host_config(hostname="x"),
        DeviceLocked,
        423,
        "Lockfile exists",
    ),
    (
        "multi-v1-stop",
        "gateway-multi",
        lambda c: c.stop_app(GATEWAY),
        DeviceBadRequest,
        400,
        "multi-container",
    ),
    (
        "multi-v1-app",
        "gateway-multi",
        lambda c: c.app(GATEWAY),
        DeviceBadRequest,
        400,
        "single-container apps",
    ),
    (
        "no-service",
        "kitchen-pi",
        lambda c: c.restart_service(DEMO),
        DeviceBadRequest,
        400,
        "serviceName or imageId",
    ),
    (
        "unknown-service",
        "kitchen-pi",
        lambda c: c.restart_service(DEMO, service_name="x"),
        DeviceNotFound,
        404,
        "Service not found",
    ),
    (
        "unknown-app-v2",
        "kitchen-pi",
        lambda c: c.stop_service(999, service_name="main"),
        DeviceNotFound,
        404,
        "App not found",
    ),
    (
        "absent-app-state",
        "kitchen-pi",
        lambda c: c.app_state(999),
        DeviceConflict,
        409,
        "Application ID does not exist: 999",
    ),
    (
        "absent-app-purge",
        "kitchen-pi",
        lambda c: c.purge(999),
        SupervisorFailed,
        503,
        "not in the current state",
    ),
    (
        "unknown-container",
        "kitchen-pi",
        lambda c: c.container_ids("nope"),
        SupervisorFailed,
        503,
        "Could not find service",
    ),
    (
        "not-local-mode",
        "kitchen-pi",
        lambda c: c.set_local_target_state({"local": {}}),
        DeviceBadRequest,
        400,
        "only set when device is in local mode",
    ),
]


@pytest.mark.parametrize(
    ("device", "call", "error", "status", "words"),
    [e[1:] for e in ERRORS],
    ids=[e[0] for e in ERRORS],
)
def test_error_answers_become_typed_errors(
    devices: SandboxDevices,
    device: str,
    call: Any,
    error: type[DeviceError],
    status: int,
    words: str,
) -> None:
    fake = devices.supervisor(device)
    key = None if error is DeviceUnauthorized else "global"
    with client_for(fake, key=key) as client, pytest.raises(error) as caught:
        call(client)
    assert type(caught.value) is error
    assert caught.value.status == status
    assert words in caught.value.server_message
    assert caught.value.where == fake.url


def test_locked_error_carries_the_lock_message(devices: SandboxDevices) -> None:
    with (
        client_for(devices.supervisor("locked-pi")) as client,
        pytest.raises(DeviceLocked) as caught,
    ):
        client.shutdown()
    assert caught.value.lock_message == "Lockfile exists for { appId: 1958513, service: main }"
    assert caught.value.to_dict()["code"] == "device_locked"


def test_force_overrides_the_lock(devices: SandboxDevices) -> None:
    fake = devices.supervisor("locked-pi")
    with client_for(fake) as client:
        assert client.restart_service(DEMO, service_name="main", force=True).status == 200
    assert fake.requests[-1].body == {"force": True, "serviceName": "main"}


def test_a_wrong_key_names_the_key_expected_and_never_itself(kitchen: FakeSupervisor) -> None:
    with client_for(kitchen, key="0123abcd") as client, pytest.raises(DeviceUnauthorized) as caught:
        client.device()
    assert "supervisor API key" in caught.value.expected_key
    assert "0123abcd" not in str(caught.value.to_dict())


def test_an_app_scoped_key_works_on_its_app_only(devices: SandboxDevices) -> None:
    multi = devices.supervisor("gateway-multi")
    app_key = sandbox_key(multi.spec.uuid, "app")
    with client_for(multi, key=app_key) as client:
        assert client.restart_service(GATEWAY, service_name="main").status == 200
        with pytest.raises(DeviceUnauthorized) as caught:
            client.restart_app(DEMO)
        with pytest.raises(DeviceConflict):
            client.app_state(DEMO)  # the supervisor answers 409 here, not 401
    assert f"scoped to app {DEMO}" in caught.value.expected_key


def test_an_app_scoped_key_sees_only_its_apps(devices: SandboxDevices) -> None:
    multi = devices.supervisor("gateway-multi")
    multi.state.apps[DEMO] = multi.state.apps[GATEWAY].__class__(DEMO, "other", "u", "c", [])
    with client_for(multi, key=sandbox_key(multi.spec.uuid, "app")) as client:
        assert [a.app_id for a in client.apps()] == [GATEWAY]


def test_unreachable_device_names_the_address_and_what_was_tried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with SupervisorClient(DirectTransport(f"127.0.0.1:{port}", None)) as client:
        client.transport._sleep = lambda _s: None  # type: ignore[attr-defined]
        with pytest.raises(DeviceUnreachable) as caught:
            client.device()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert len(caught.value.tried) == 3  # a read is tried three times
    assert all(t.startswith(f"GET http://127.0.0.1:{port}/v1/device") for t in caught.value.tried)


def test_an_action_is_never_sent_twice() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = DirectTransport(f"127.0.0.1:{port}", None)
    with SupervisorClient(transport) as client, pytest.raises(DeviceUnreachable) as caught:
        client.reboot()
    assert len(caught.value.tried) == 1


def test_ping_gives_up_fast_on_a_silent_device() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()  # accepts connections, never answers
        port = server.getsockname()[1]
        started = time.monotonic()
        transport = DirectTransport(f"127.0.0.1:{port}")
        with SupervisorClient(transport) as client, pytest.raises(DeviceUnreachable) as caught:
            client.ping()
        elapsed_s = time.monotonic() - started
    assert "no answer in time" in str(caught.value)
    assert elapsed_s < 10
