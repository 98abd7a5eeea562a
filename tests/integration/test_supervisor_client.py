"""The Supervisor API client, directly against the sandbox's fake supervisors (real HTTP on
127.0.0.1): every endpoint, what reaches the device, typed answers, reboot and shutdown, and log
streams. Error answers are in test_supervisor_client_errors.py."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from flasher.models import Secret
from flasher.sandbox.devices import SandboxDevices
from flasher.sandbox.supervisor_fake import FakeSupervisor
from flasher.supervisor.client import SupervisorClient
from flasher.supervisor.errors import (
    DeviceUnauthorized,
    DeviceUnreachable,
)
from flasher.supervisor.models import ProxySettings
from flasher.supervisor.transport import DirectTransport
from tests.support.supervisor import DEMO, GATEWAY, client_for

# -- what reaches the device ------------------------------------------------------------------


CALLS: list[tuple[str, Any, str, str, Any]] = [
    # (test id, client call, method, path, body the device receives)
    ("blink", lambda c: c.blink(), "POST", "/v1/blink", None),
    ("update", lambda c: c.update(), "POST", "/v1/update", {}),
    ("update-force", lambda c: c.update(force=True), "POST", "/v1/update", {"force": True}),
    ("purge", lambda c: c.purge(DEMO), "POST", "/v1/purge", {"appId": DEMO}),
    ("restart", lambda c: c.restart(DEMO), "POST", "/v1/restart", {"appId": DEMO}),
    ("device", lambda c: c.device(), "GET", "/v1/device", None),
    ("app", lambda c: c.app(DEMO), "GET", f"/v1/apps/{DEMO}", None),
    ("stop-app", lambda c: c.stop_app(DEMO), "POST", f"/v1/apps/{DEMO}/stop", {}),
    ("start-app", lambda c: c.start_app(DEMO), "POST", f"/v1/apps/{DEMO}/start", None),
    ("host-config", lambda c: c.host_config(), "GET", "/v1/device/host-config", None),
    (
        "set-hostname",
        lambda c: c.set_host_config(hostname="bench-1"),
        "PATCH",
        "/v1/device/host-config",
        {"network": {"hostname": "bench-1"}},
    ),
    (
        "restart-service",
        lambda c: c.restart_service(DEMO, service_name="main", force=True),
        "POST",
        f"/v2/applications/{DEMO}/restart-service",
        {"force": True, "serviceName": "main"},
    ),
    (
        "stop-service-by-image",
        lambda c: c.stop_service(DEMO, image_id=5005131),
        "POST",
        f"/v2/applications/{DEMO}/stop-service",
        {"imageId": 5005131},
    ),
    (
        "start-service",
        lambda c: c.start_service(DEMO, service_name="main"),
        "POST",
        f"/v2/applications/{DEMO}/start-service",
        {"serviceName": "main"},
    ),
    ("restart-app", lambda c: c.restart_app(DEMO), "POST", f"/v2/applications/{DEMO}/restart", {}),
    ("purge-app", lambda c: c.purge_app(DEMO), "POST", f"/v2/applications/{DEMO}/purge", {}),
    ("apps", lambda c: c.apps(), "GET", "/v2/applications/state", None),
    ("app-state", lambda c: c.app_state(DEMO), "GET", f"/v2/applications/{DEMO}/state", None),
    ("state-status", lambda c: c.state_status(), "GET", "/v2/state/status", None),
    ("version", lambda c: c.version(), "GET", "/v2/version", None),
    ("container-ids", lambda c: c.container_ids(), "GET", "/v2/containerId", None),
    ("target-state", lambda c: c.local_target_state(), "GET", "/v2/local/target-state", None),
    ("device-info", lambda c: c.device_info(), "GET", "/v2/local/device-info", None),
    ("name", lambda c: c.device_name(), "GET", "/v2/device/name", None),
    ("tags", lambda c: c.tags(), "GET", "/v2/device/tags", None),
    (
        "set-tags",
        lambda c: c.set_tags({"room": "hall"}),
        "PATCH",
        "/v2/device/tags",
        {"room": "hall"},
    ),
    ("vpn", lambda c: c.vpn(), "GET", "/v2/device/vpn", None),
    ("cleanup-volumes", lambda c: c.cleanup_volumes(), "GET", "/v2/cleanup-volumes", None),
]


@pytest.mark.parametrize(
    ("call", "method", "path", "body"), [c[1:] for c in CALLS], ids=[c[0] for c in CALLS]
)
def test_each_call_reaches_the_device_as_documented_with_its_key(
    kitchen: FakeSupervisor, call: Any, method: str, path: str, body: Any
) -> None:
    with client_for(kitchen) as client:
        call(client)
    seen = kitchen.requests[-1]
    assert (seen.method, seen.path, seen.body) == (method, path, body)
    assert (seen.key, seen.key_via) == (kitchen.spec.api_key, "query")


def test_ping_and_healthy_send_no_key_and_need_none(kitchen: FakeSupervisor) -> None:
    with client_for(kitchen, key=None) as client:
        assert client.ping() is True
        assert client.healthy() is True
    assert [(r.path, r.key) for r in kitchen.requests] == [("/ping", None), ("/v1/healthy", None)]


def test_unhealthy_supervisor_reads_as_false(devices: SandboxDevices) -> None:
    devices.by_name("hall-pi").spec.healthy = False
    with client_for(devices.supervisor("hall-pi")) as client:
        assert client.healthy() is False


def test_the_key_never_appears_in_the_debug_log(
    kitchen: FakeSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with client_for(kitchen) as client:
        client.device()
    key = kitchen.spec.api_key or ""
    assert any("/v1/device" in r.getMessage() for r in caplog.records)
    assert not any(key in r.getMessage() for r in caplog.records)


# -- typed answers ----------------------------------------------------------------------------


def test_device_state_is_typed(kitchen: FakeSupervisor) -> None:
    with client_for(kitchen) as client:
        state = client.device()
    assert state.os_version == "balenaOS 6.5.50+rev8"
    assert state.ip_addresses == ("192.168.1.23", "10.114.102.1")
    assert state.status == "Idle"  # the supervisor reports a running service as Idle
    assert state.api_port == 48484


def test_device_info_names_type_and_arch(multi: FakeSupervisor) -> None:
    with client_for(multi) as client:
        info = client.device_info()
    assert (info.device_type, info.arch) == ("generic-amd64", "amd64")


def test_stopping_a_service_shows_in_the_state(multi: FakeSupervisor) -> None:
    with client_for(multi) as client:
        client.stop_service(GATEWAY, service_name="frontend")
        services = {s.name: s.status for s in client.apps()[0].services}
        client.start_service(GATEWAY, service_name="frontend")
        after = {s.name: s.status for s in client.apps()[0].services}
    assert services == {"main": "Running", "frontend": "exited", "proxy": "Running"}
    assert after["frontend"] == "Running"


def test_stop_app_answers_the_container_id(kitchen: FakeSupervisor) -> None:
    with client_for(kitchen) as client:
        result = client.stop_app(DEMO)
        ids = client.container_ids("main")
    assert result.container_id == ids["main"]


def test_update_is_applied_at_once_or_only_noted(devices: SandboxDevices) -> None:
    devices.by_name("hall-pi").spec.instant_updates = False
    with client_for(devices.supervisor("hall-pi")) as client:
        assert client.update().status == 202
        assert client.update(force=True).status == 204


def test_host_config_round_trip_keeps_the_proxy_password_secret(kitchen: FakeSupervisor) -> None:
    proxy = ProxySettings("socks5", "10.0.0.1", 1080, login="me", password=Secret("pw"))
    with client_for(kitchen) as client:
        client.set_host_config(hostname="bench-7", proxy=proxy)
        config = client.host_config()
        client.set_host_config(hostname="", clear_proxy=True)
        cleared = client.host_config()
    assert config.hostname == "bench-7"
    assert config.proxy is not None and config.proxy.password == Secret("pw")
    assert "pw" not in repr(config) and config.to_dict()["proxy"]["has_password"] is True
    assert (cleared.hostname, cleared.proxy) == (kitchen.spec.uuid[:7], None)


def test_tags_set_then_read(kitchen: FakeSupervisor) -> None:
    with client_for(kitchen) as client:
        assert client.set_tags({"room": "kitchen"}).status == 202
        assert [(t.name, t.value) for t in client.tags()] == [("room", "kitchen")]


def test_container_id_of_one_service_is_asked_by_query(multi: FakeSupervisor) -> None:
    with client_for(multi) as client:
        ids = client.container_ids("proxy")
    assert list(ids) == ["proxy"]
    assert multi.requests[-1].query == {"service": "proxy"}


def test_regenerated_key_replaces_the_old_one_at_once(kitchen: FakeSupervisor) -> None:
    old = kitchen.spec.api_key
    with client_for(kitchen) as client:
        new = client.regenerate_api_key()
        with pytest.raises(DeviceUnauthorized):
            client.device()
    assert new.reveal() != old and len(new.reveal()) == 64
    assert "***" in repr(new)
    with SupervisorClient(DirectTransport(kitchen.url, new)) as fresh:
        assert fresh.device_name() == "kitchen-pi"


def test_local_mode_answers_everything_without_a_key(devices: SandboxDevices) -> None:
    fake = devices.supervisor("gateway-local")
    target = {"local": {"name": "x", "config": {}, "apps": {"1": {"name": "a", "services": {}}}}}
    with client_for(fake, key=None) as client:
        assert client.device_name() == "gateway-local"
        assert client.set_local_target_state(target).status == 200
        assert client.local_target_state() == target
    assert all(r.key is None for r in fake.requests)


def test_unmanaged_device_answers_without_a_key(devices: SandboxDevices) -> None:
    with client_for(devices.supervisor("bench-nuc"), key=None) as client:
        assert client.device_info().device_type == "intel-nuc"


# -- reboot, shutdown -------------------------------------------------------------------------


def _wait_until(predicate: Any, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_reboot_drops_the_device_and_it_comes_back_fresh(devices: SandboxDevices) -> None:
    devices.by_name("hall-pi").spec.reboot_delay_s = 0.3
    fake = devices.supervisor("hall-pi")
    with client_for(fake) as client:
        client.set_host_config(hostname="changed")
        result = client.reboot()
        assert (result.status, result.connection_dropped) == (202, False)
        assert _wait_until(lambda: not fake.up.is_set())
        with pytest.raises(DeviceUnreachable):
            client.ping()
        assert _wait_until(fake.up.is_set)
        assert client.ping() is True
        assert client.host_config().hostname == fake.spec.uuid[:7]
    assert fake.state.boots == 2


def test_shutdown_stays_down(devices: SandboxDevices) -> None:
    fake = devices.supervisor("kitchen-pi")
    with client_for(fake) as client:
        assert client.shutdown().status == 202
        assert _wait_until(lambda: not fake.up.is_set())
        time.sleep(fake.spec.reboot_delay_s + 0.2)
        assert not fake.up.is_set()


def test_a_reboot_that_drops_the_connection_is_not_a_failure(devices: SandboxDevices) -> None:
    devices.by_name("hall-pi").spec.drop_on_reboot = True
    with client_for(devices.supervisor("hall-pi")) as client:
        result = client.reboot()
    assert (result.status, result.connection_dropped) == (None, True)


# -- streams ----------------------------------------------------------------------------------


def test_logs_stream_ndjson_and_stop_when_closed(devices: SandboxDevices) -> None:
    fake = devices.supervisor("gateway-local")
    with client_for(fake, key=None) as client:
        stream = client.logs()
        first = [next(stream) for _ in range(4)]
        assert fake.streams_open == 1
        stream.close()
    assert first[0].message == "Streaming logs" and first[0].is_system
    assert [line.service_name for line in first[1:]] == ["main", "main", "main"]
    assert _wait_until(lambda: fake.streams_open == 0 and fake.streams_closed == 1)


def test_journal_sends_its_options_and_ends_by_itself(kitchen: FakeSupervisor) -> None:
    with client_for(kitchen) as client:
        lines = list(client.journal(count=5, unit="balena-supervisor.service"))
    assert len(lines) == 5 and all("balena-supervisor[" in line for line in lines)
    assert kitchen.requests[-1].body == {"count": 5, "unit": "balena-supervisor.service"}


def test_a_followed_journal_stops_mid_way_when_left(kitchen: FakeSupervisor) -> None:
    with client_for(kitchen) as client:
        for n, _line in enumerate(client.journal(follow=True, count=2)):
            if n == 5:
                break
    assert kitchen.requests[-1].body == {"follow": True, "count": 2}
    assert _wait_until(lambda: kitchen.streams_open == 0 and kitchen.streams_closed == 1)


def test_logs_end_after_the_idle_time(devices: SandboxDevices) -> None:
    devices.by_name("gateway-local").spec.log_interval_s = 5.0
    fake = devices.supervisor("gateway-local")
    done = threading.Event()
    with client_for(fake, key=None) as client:
        lines = []

        def read() -> None:
            lines.extend(client.logs(idle_timeout_s=0.5))
            done.set()

        threading.Thread(target=read, daemon=True).start()
        assert done.wait(4)
    assert len(lines) >= 1
