"""The bench's boot check on one card record: the address it looks at, a device that never
comes up, another device than the card was made for, a card that was not written, and the
settings it refuses."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from flasher.bench.bootcheck import BootCheckSettings, address_for, check_boot
from flasher.bench.report import CardRecord
from flasher.errors import ConfigError
from flasher.sandbox.devices import default_devices
from flasher.sandbox.supervisor_fake import FakeSupervisor

RECORD = CardRecord(
    timestamp="2026-12-07T01:00:00Z", card=7, slot="slot-2", slot_number=2, device="/dev/sdb",
    serial=None, vendor=None, model=None, size_bytes=8 * 10**9, image_sha256=None,
    device_type="raspberrypi4-64", os_version="6.5.50+rev8", config_sha256=None,
    hostname="bench-0007", ok=True, verified=True, bytes_written=1, seconds=1.0,
    write_seconds=1.0, written_sha256=None,
)  # fmt: skip


@pytest.fixture
def device() -> Iterator[FakeSupervisor]:
    spec = replace(default_devices()[0].spec, local_mode=True, api_key=None)
    with FakeSupervisor(spec) as fake:
        yield fake


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("template", "address"),
    [
        ("{hostname}.local", "bench-0007.local"),
        ("10.0.0.{n}", "10.0.0.7"),
        ("{hostname}.lab:{slot}0", "bench-0007.lab:20"),
    ],
)
def test_address_is_built_from_the_card(template: str, address: str) -> None:
    assert address_for(BootCheckSettings(template), RECORD) == address


def test_address_uses_the_slots_name_and_the_serial() -> None:
    named = replace(RECORD, slot_name="left", serial="ab12")
    settings = BootCheckSettings("{slot}-{serial}.lab")
    settings.validate(hostnames=True)
    assert address_for(settings, named) == "left-ab12.lab"


def test_a_device_that_boots_is_described(device: FakeSupervisor) -> None:
    boot = check_boot(BootCheckSettings(f"127.0.0.1:{device.port}", 5, 0.1), RECORD)
    assert (boot["up"], boot["device_type"], boot["os_version"]) == (
        True,
        "raspberrypi4-64",
        "balenaOS 6.5.50+rev8",
    )


def test_a_device_that_never_comes_up_is_reported() -> None:
    boot = check_boot(BootCheckSettings(f"127.0.0.1:{_dead_port()}", 0.3, 0.1), RECORD)
    assert (boot["up"], boot["code"]) == (False, "device_unreachable")
    assert "did not answer within 0.3 s" in boot["problem"]


def test_another_device_is_reported_as_a_mismatch(device: FakeSupervisor) -> None:
    record = replace(RECORD, device_type="raspberrypi5")
    boot = check_boot(BootCheckSettings(f"127.0.0.1:{device.port}", 5, 0.1), record)
    assert (boot["up"], boot["code"]) == (True, "device_mismatch")
    assert "not a raspberrypi5" in boot["problem"]


def test_a_card_that_failed_is_not_looked_for() -> None:
    boot = check_boot(BootCheckSettings("127.0.0.1:1"), replace(RECORD, ok=False))
    assert (boot["checked"], boot["up"]) == (False, False)


def test_the_report_line_carries_the_boot_result_only_when_checked() -> None:
    boot: dict[str, Any] = {"checked": True, "up": True}
    assert "boot" not in RECORD.to_dict()
    assert replace(RECORD, boot=boot).to_dict()["boot"] == boot


@pytest.mark.parametrize(
    ("settings", "hostnames"),
    [
        (BootCheckSettings("{name}.local"), True),
        (BootCheckSettings("{hostname}.local"), False),
        (BootCheckSettings("x", timeout_s=0), True),
    ],
    ids=["placeholder", "no-hostnames", "timeout"],
)
def test_bad_settings_are_refused(settings: BootCheckSettings, hostnames: bool) -> None:
    with pytest.raises(ConfigError):
        settings.validate(hostnames=hostnames)
