"""The post-flash check: waiting for a device that boots late, never comes, or is not the one
the card was made for; OS version matching."""

from __future__ import annotations

import socket
import threading

import pytest

from flasher.errors import Cancelled
from flasher.events import CancelToken
from flasher.sandbox.devices import SandboxDevices
from flasher.supervisor.client import SupervisorClient
from flasher.supervisor.errors import DeviceMismatch, DeviceUnreachable
from flasher.supervisor.transport import DirectTransport
from flasher.supervisor.wait import os_version_of, same_os_version, wait_for_device


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("balenaOS 6.5.50+rev8", "6.5.50+rev8"),
        ("Resin OS 1.0.4 (fido)", "1.0.4"),
        ("v2.80.3+rev1.dev", "2.80.3+rev1.dev"),
        ("balenaOS 2025.7.0", "2025.7.0"),
        ("unknown", None),
        (None, None),
    ],
)
def test_os_version_is_read_from_the_os_name(text: str | None, version: str | None) -> None:
    assert os_version_of(text) == version


@pytest.mark.parametrize(
    ("expected", "found", "same"),
    [
        ("6.5.50+rev8", "balenaOS 6.5.50+rev8", True),
        ("6.5.50", "balenaOS 6.5.50+rev8", True),
        ("v6.5.50+rev8", "balenaOS 6.5.50+rev8", True),
        ("6.5.50+rev7", "balenaOS 6.5.50+rev8", False),
        ("6.5.5", "balenaOS 6.5.50+rev8", False),
        ("6.5.50", None, False),
    ],
)
def test_os_versions_match_on_the_balena_version(
    expected: str, found: str | None, same: bool
) -> None:
    assert same_os_version(expected, found) is same


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_device_that_never_answers_is_reported_after_the_timeout() -> None:
    now = [0.0]
    client = SupervisorClient(DirectTransport(f"127.0.0.1:{_free_port()}"))
    with pytest.raises(DeviceUnreachable) as caught:
        wait_for_device(
            client,
            timeout_s=10,
            poll_interval_s=2,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )
    assert "did not answer within 10 s" in str(caught.value)
    assert caught.value.tried == (f"GET {client.transport.where}/ping, 6 time(s) over 10 s",)


def test_a_device_that_boots_late_is_found(devices: SandboxDevices) -> None:
    fake = devices.supervisor("gateway-local")
    fake.stop()
    threading.Timer(0.5, fake.start).start()
    with SupervisorClient(DirectTransport(fake.url)) as client:
        check = wait_for_device(
            client, device_type="generic-amd64", timeout_s=20, poll_interval_s=0.1
        )
    assert check.up and check.first_ping_s is not None and check.first_ping_s >= 0.4
    assert check.supervisor_version == "17.0.3"


def test_another_device_type_is_a_mismatch(devices: SandboxDevices) -> None:
    fake = devices.supervisor("gateway-local")
    with SupervisorClient(DirectTransport(fake.url)) as client, pytest.raises(DeviceMismatch) as e:
        wait_for_device(client, device_type="raspberrypi4-64", timeout_s=5)
    assert (e.value.field, e.value.expected, e.value.found) == (
        "device_type",
        "raspberrypi4-64",
        "generic-amd64",
    )


def test_waiting_stops_when_cancelled() -> None:
    token = CancelToken()
    token.cancel()
    client = SupervisorClient(DirectTransport(f"127.0.0.1:{_free_port()}"))
    with pytest.raises(Cancelled):
        wait_for_device(client, timeout_s=60, cancel=token)
