"""The fake supervisor itself, spoken to with plain HTTP: the real supervisor's statuses, content
types and bodies (the contract the client and the proxy are tested against)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from flasher.sandbox.devices import DEMO_FLEET, GATEWAY_FLEET, SandboxDevices, sandbox_key
from flasher.sandbox.supervisor_fake import FakeSupervisor

DEMO, GATEWAY = DEMO_FLEET[0], GATEWAY_FLEET[0]
LOCK = "Lockfile exists for { appId: 1958513, service: main }"
JSON, HTML, TEXT = "application/json", "text/html", "text/plain"


def _failed(message: str) -> dict[str, str]:
    return {"status": "failed", "message": message}


def _failed_text(message: str) -> str:
    return f'{{"status":"failed","message":"{message}"}}'


def _send(
    fake: FakeSupervisor,
    method: str,
    path: str,
    *,
    key: str | None = None,
    header: str | None = None,
    content_type: str | None = None,
    **options: Any,
) -> requests.Response:
    params = {"apikey": key} if key else None
    headers = {"Authorization": header} if header else {}
    if content_type:
        headers["Content-Type"] = content_type
    return requests.request(
        method, fake.url + path, params=params, headers=headers, timeout=10, **options
    )


def _key(fake: FakeSupervisor) -> str:
    return fake.spec.api_key or ""


def test_missing_key_is_a_plain_401(devices: SandboxDevices) -> None:
    answer = _send(devices.supervisor("kitchen-pi"), "GET", "/v1/device")
    assert (answer.status_code, answer.text) == (401, "Unauthorized")
    assert answer.headers["Content-Type"].startswith("text/plain")


def test_unknown_path_is_401_without_a_key_and_404_with_one(devices: SandboxDevices) -> None:
    fake = devices.supervisor("kitchen-pi")
    assert _send(fake, "GET", "/v9/nothing").status_code == 401
    answer = _send(fake, "GET", "/v9/nothing", key=_key(fake))
    assert (answer.status_code, answer.text) == (404, "Cannot GET /v9/nothing")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "ApiKey", "APIKEY"])
def test_the_key_may_come_in_the_authorization_header(devices: SandboxDevices, scheme: str) -> None:
    fake = devices.supervisor("kitchen-pi")
    answer = _send(fake, "GET", "/v2/device/name", header=f"{scheme} {_key(fake)}")
    assert answer.json() == {"status": "success", "deviceName": "kitchen-pi"}


def test_malformed_json_is_a_503(devices: SandboxDevices) -> None:
    fake = devices.supervisor("kitchen-pi")
    answer = _send(
        fake,
        "POST",
        "/v1/update",
        key=_key(fake),
        data=b"{nope",
        content_type="application/json",
    )
    assert answer.status_code == 503
    assert answer.json()["status"] == "failed"


@pytest.mark.parametrize(
    ("device", "method", "path", "body", "status", "content_type", "answer"),
    [
        ("hall-pi", "POST", "/v1/blink", None, 200, TEXT, "OK"),
        ("hall-pi", "POST", "/v1/purge", {"appId": DEMO}, 200, JSON, {"Data": "OK", "Error": ""}),
        ("hall-pi", "POST", "/v1/purge", {}, 400, HTML, "Invalid or missing appId"),
        ("hall-pi", "POST", "/v1/restart", {}, 400, HTML, "Missing app id"),
        ("hall-pi", "POST", "/v1/restart", {"appId": "1958513"}, 200, TEXT, "OK"),
        (
            "hall-pi",
            "POST",
            "/v2/applications/0/restart",
            None,
            400,
            JSON,
            _failed("Missing app id"),
        ),
        (
            "hall-pi",
            "GET",
            "/v2/containerId?service=x",
            None,
            503,
            JSON,
            _failed("Could not find service with that name"),
        ),
        (
            "hall-pi",
            "GET",
            "/v2/version",
            None,
            200,
            JSON,
            {"status": "success", "version": "17.0.3"},
        ),
        ("locked-pi", "POST", "/v1/reboot", None, 423, JSON, {"Data": "", "Error": LOCK}),
        (
            "locked-pi",
            "PATCH",
            "/v1/device/host-config",
            {"network": {"hostname": "x"}},
            423,
            HTML,
            LOCK,
        ),
        ("hall-pi", "PATCH", "/v1/device/host-config", {"hostname": "x"}, 400, HTML, None),
        (
            "gateway-multi",
            "GET",
            f"/v1/apps/{GATEWAY}",
            None,
            400,
            HTML,
            "Some v1 endpoints are only allowed on single-container apps",
        ),
    ],
)
def test_answers_have_the_real_status_type_and_body(
    devices: SandboxDevices,
    device: str,
    method: str,
    path: str,
    body: Any,
    status: int,
    content_type: str,
    answer: Any,
) -> None:
    fake = devices.supervisor(device)
    got = _send(fake, method, path, key=_key(fake), json=body)
    assert got.status_code == status
    assert got.headers["Content-Type"].startswith(content_type)
    if answer is not None:
        assert (got.json() if isinstance(answer, dict) else got.text) == answer


def test_reboot_answers_202_with_a_null_error(devices: SandboxDevices) -> None:
    fake = devices.supervisor("hall-pi")
    answer = _send(fake, "POST", "/v1/reboot", key=_key(fake))
    assert (answer.status_code, answer.json()) == (202, {"Data": "OK", "Error": None})


@pytest.mark.parametrize(
    ("method", "path", "status", "answer"),
    [
        ("POST", f"/v1/apps/{DEMO}/stop", 401, "Unauthorized"),
        ("GET", f"/v1/apps/{DEMO}", 401, _failed_text("Application is not available")),
        ("POST", f"/v2/applications/{DEMO}/restart", 401, _failed_text("Unauthorized")),
        (
            "GET",
            f"/v2/applications/{DEMO}/state",
            409,
            _failed_text(f"Application ID does not exist: {DEMO}"),
        ),
    ],
)
def test_an_app_scoped_key_on_another_app(
    devices: SandboxDevices, method: str, path: str, status: int, answer: str
) -> None:
    fake = devices.supervisor("gateway-multi")
    got = _send(fake, method, path, key=sandbox_key(fake.spec.uuid, "app"))
    assert (got.status_code, got.text) == (status, answer)


def test_ping_and_healthy_need_no_key(devices: SandboxDevices) -> None:
    fake = devices.supervisor("kitchen-pi")
    assert _send(fake, "GET", "/ping").text == "OK"
    assert _send(fake, "GET", "/v1/healthy").status_code == 200


def test_unhealthy_is_a_500(devices: SandboxDevices) -> None:
    devices.by_name("kitchen-pi").spec.healthy = False
    answer = _send(devices.supervisor("kitchen-pi"), "GET", "/v1/healthy")
    assert (answer.status_code, answer.text) == (500, "Unhealthy")
