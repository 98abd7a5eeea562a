"""The sandbox API's `/supervisor` proxy and the client's proxy transport: what reaches the
device, single and fleet-wide (207) answers, offline (404), unreachable (502), the body checks,
and how the proxy re-sends the supervisor's answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from flasher.balena.session import BalenaSession
from flasher.errors import AuthError
from flasher.models import Secret
from flasher.sandbox.devices import DEMO_FLEET, GATEWAY_FLEET
from flasher.sandbox.images import ImageScale
from flasher.sandbox.server import SandboxServer
from flasher.supervisor.client import READ, SupervisorClient, fleet_replies
from flasher.supervisor.errors import (
    DeviceError,
    DeviceLocked,
    DeviceOffline,
    DeviceUnreachable,
    SupervisorFailed,
)
from flasher.supervisor.transport import ProxyTarget, ProxyTransport

DEMO = DEMO_FLEET[0]
AUTH = {"Authorization": "Bearer sandbox-token"}


@pytest.fixture
def sandbox(tmp_path: Any) -> Iterator[SandboxServer]:
    with SandboxServer.start(image_scale=ImageScale.tiny(), cache_dir=tmp_path) as server:
        yield server


def _uuid(sandbox: SandboxServer, name: str) -> str:
    return sandbox.devices.by_name(name).spec.uuid


def _post(sandbox: SandboxServer, path: str, body: Any, auth: bool = True) -> requests.Response:
    return requests.post(
        f"{sandbox.url}/supervisor{path}", json=body, headers=AUTH if auth else {}, timeout=30
    )


@pytest.fixture
def session(sandbox: SandboxServer) -> Iterator[BalenaSession]:
    with BalenaSession(sandbox.url, Secret("sandbox-token")) as session:
        yield session


def _client(session: BalenaSession, sandbox: SandboxServer, name: str) -> SupervisorClient:
    return SupervisorClient(ProxyTransport(session, ProxyTarget(uuid=_uuid(sandbox, name))))


# -- the proxy as the API answers it ----------------------------------------------------------


def test_ping_through_the_proxy_reaches_the_device_with_its_key(sandbox: SandboxServer) -> None:
    answer = _post(sandbox, "/ping", {"uuid": _uuid(sandbox, "kitchen-pi"), "method": "GET"})
    fake = sandbox.devices.supervisor("kitchen-pi")
    assert (answer.status_code, answer.text) == (200, "OK")
    assert answer.headers["Content-Type"].startswith("text/plain")
    seen = fake.requests[-1]
    assert (seen.method, seen.path, seen.key, seen.key_via) == (
        "GET",
        "/ping",
        fake.spec.api_key,
        "query",
    )


def test_method_defaults_to_post_and_data_is_the_body(sandbox: SandboxServer) -> None:
    uuid = _uuid(sandbox, "kitchen-pi")
    answer = _post(sandbox, "/v1/update", {"uuid": uuid, "data": {"force": True}})
    seen = sandbox.devices.supervisor("kitchen-pi").requests[-1]
    assert answer.status_code == 204
    assert (seen.method, seen.path, seen.body) == ("POST", "/v1/update", {"force": True})


def test_an_app_wide_request_answers_207_with_one_reply_per_online_device(
    sandbox: SandboxServer,
) -> None:
    answer = _post(sandbox, "/ping", {"appId": DEMO, "method": "GET"})
    replies = answer.json()
    assert answer.status_code == 207
    # kitchen, hall, locked answer; attic is online for the API but does not answer; cellar is
    # offline and not asked.
    assert sorted(r["statusCode"] for r in replies) == [200, 200, 200, 502]
    assert [r["body"] for r in replies if r["statusCode"] == 200] == ["OK", "OK", "OK"]


def test_the_client_reads_a_207_as_per_device_replies(
    sandbox: SandboxServer, session: BalenaSession
) -> None:
    transport = ProxyTransport(session, ProxyTarget(app_id=GATEWAY_FLEET[0]))
    replies = fleet_replies(transport.call("GET", "/v2/device/name", timeouts=READ))
    names = sorted(r.body["deviceName"] for r in replies)
    assert names == ["gateway-local", "gateway-multi"]


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({}, 400, "At least one filter must be specified"),
        ({"appId": "abc"}, 400, "App ID must be a valid integer if specified"),
        ({"deviceId": "x1"}, 400, "Device ID must be a valid integer if specified"),
        ({"uuid": ""}, 400, ""),
        ({"uuid": "abc", "method": "FETCH"}, 400, ""),
        ({"uuid": "abc", "data": [1]}, 400, ""),
        ({"uuid": "0" * 32}, 404, '"No online device(s) found"'),
    ],
    ids=["no-filter", "app-id", "device-id", "empty-uuid", "method", "data", "unknown"],
)
def test_proxy_checks_its_body(
    sandbox: SandboxServer, body: dict[str, Any], status: int, text: str
) -> None:
    answer = _post(sandbox, "/ping", body)
    assert (answer.status_code, answer.text) == (status, text)


def test_proxy_needs_a_login(sandbox: SandboxServer) -> None:
    answer = _post(sandbox, "/ping", {"uuid": _uuid(sandbox, "kitchen-pi")}, auth=False)
    assert answer.status_code == 401


def test_text_the_proxy_cannot_pass_becomes_a_500(sandbox: SandboxServer) -> None:
    # The lock text of host-config has braces, which the proxy does not pass as text.
    uuid = _uuid(sandbox, "locked-pi")
    body = {"uuid": uuid, "method": "PATCH", "data": {"network": {"hostname": "x"}}}
    answer = _post(sandbox, "/v1/device/host-config", body)
    assert (answer.status_code, answer.json()) == (
        500,
        {"error": "Bad API response from supervisor"},
    )


def test_an_answer_without_content_type_comes_back_empty(sandbox: SandboxServer) -> None:
    answer = _post(sandbox, "/v2/journal-logs", {"uuid": _uuid(sandbox, "kitchen-pi")})
    assert (answer.status_code, answer.content) == (200, b"")


def test_the_sdk_double_slash_path_reaches_the_supervisors_route(sandbox: SandboxServer) -> None:
    answer = _post(sandbox, "//ping", {"uuid": _uuid(sandbox, "kitchen-pi"), "method": "GET"})
    assert answer.text == "OK"


# -- the client's proxy transport -------------------------------------------------------------


def test_client_through_the_proxy_reads_typed_answers(
    sandbox: SandboxServer, session: BalenaSession
) -> None:
    with _client(session, sandbox, "gateway-multi") as client:
        assert client.ping() is True
        assert client.device_info().device_type == "generic-amd64"
        assert [s.name for s in client.apps()[0].services] == ["main", "frontend", "proxy"]


def test_query_strings_are_not_forwarded_so_the_client_filters(
    sandbox: SandboxServer, session: BalenaSession
) -> None:
    with _client(session, sandbox, "gateway-multi") as client:
        ids = client.container_ids("proxy")
    seen = sandbox.devices.supervisor("gateway-multi").requests[-1]
    assert list(ids) == ["proxy"]
    assert seen.query == {}


def test_lock_through_the_proxy_is_a_locked_error(
    sandbox: SandboxServer, session: BalenaSession
) -> None:
    with _client(session, sandbox, "locked-pi") as client, pytest.raises(DeviceLocked) as caught:
        client.reboot()
    assert caught.value.lock_message.startswith("Lockfile exists for { appId: 1958513")


def test_offline_device_is_device_offline(sandbox: SandboxServer, session: BalenaSession) -> None:
    with _client(session, sandbox, "cellar-pi") as client, pytest.raises(DeviceOffline) as caught:
        client.ping()
    assert caught.value.status == 404
    assert caught.value.exit_code == 5


def test_unreachable_device_is_device_unreachable(
    sandbox: SandboxServer, session: BalenaSession
) -> None:
    with _client(session, sandbox, "attic-pi") as client, pytest.raises(DeviceUnreachable) as e:
        client.device()
    assert e.value.status == 502
    assert "ECONNREFUSED" in e.value.server_message


def test_bad_answer_through_the_proxy_is_a_supervisor_failure(
    sandbox: SandboxServer, session: BalenaSession
) -> None:
    with _client(session, sandbox, "locked-pi") as client, pytest.raises(SupervisorFailed) as e:
        client.set_host_config(hostname="x")
    assert e.value.server_message == "Bad API response from supervisor"


def test_streams_are_refused_through_the_proxy(
    sandbox: SandboxServer, session: BalenaSession
) -> None:
    with _client(session, sandbox, "kitchen-pi") as client, pytest.raises(DeviceError) as e:
        next(client.logs())
    assert "proxy" in str(e.value)


def test_a_refused_login_is_an_auth_error(sandbox: SandboxServer) -> None:
    with BalenaSession(sandbox.url) as anonymous:
        target = ProxyTarget(uuid=_uuid(sandbox, "kitchen-pi"))
        client = SupervisorClient(ProxyTransport(anonymous, target))
        with pytest.raises(AuthError):
            client.ping()


def test_the_login_token_never_reaches_the_device(
    sandbox: SandboxServer, session: BalenaSession
) -> None:
    with _client(session, sandbox, "kitchen-pi") as client:
        client.blink()
    fake = sandbox.devices.supervisor("kitchen-pi")
    assert "sandbox-token" not in json.dumps([r.__dict__ for r in fake.requests])
