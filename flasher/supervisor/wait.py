"""The post-flash check: wait for a freshly booted device and check it is what the card carried.

`wait_for_device` pings the supervisor until it answers (or the time runs out), then reads
/v2/local/device-info and /v1/device and compares the device type and OS version with what was
expected. OS versions compare on their balena version ("balenaOS 6.5.50+rev8", "6.5.50+rev8"
and "v6.5.50+rev8" are the same). Core: never prints; imports flasher.supervisor only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from flasher.errors import Cancelled
from flasher.events import CancelToken
from flasher.supervisor.client import SupervisorClient
from flasher.supervisor.errors import DeviceError, DeviceMismatch, DeviceUnreachable

_VERSION = re.compile(r"v?(\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?)")


def os_version_of(text: str | None) -> str | None:
    """The balena version inside an OS name ("balenaOS 6.5.50+rev8" -> "6.5.50+rev8")."""
    if not text:
        return None
    match = _VERSION.search(text)
    return match.group(1) if match else None


def same_os_version(expected: str, found: str | None) -> bool:
    want, got = os_version_of(expected), os_version_of(found)
    if want is None or got is None:
        return False
    # A card made for "6.5.50" runs "6.5.50+rev8"; a build suffix given must match exactly.
    return got == want or ("+" not in want and got.split("+", 1)[0] == want)


@dataclass(frozen=True)
class BootCheck:
    """What the check found. `first_ping_s` is the time from the start to the first answer."""

    address: str
    up: bool
    device_type: str | None = None
    os_version: str | None = None
    supervisor_version: str | None = None
    first_ping_s: float | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "address": self.address,
            "up": self.up,
            "device_type": self.device_type,
            "os_version": self.os_version,
            "supervisor_version": self.supervisor_version,
            "first_ping_s": None if self.first_ping_s is None else round(self.first_ping_s, 2),
            "problem": self.problem,
        }


def wait_for_device(
    client: SupervisorClient,
    *,
    device_type: str | None = None,
    os_version: str | None = None,
    timeout_s: float = 300.0,
    poll_interval_s: float = 2.0,
    cancel: CancelToken | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> BootCheck:
    """Wait until the device answers, then check it. Raises DeviceUnreachable when it never
    answers within `timeout_s`, DeviceMismatch when it is another type or OS version."""
    where = client.transport.where
    start = clock()
    last: DeviceError | None = None
    attempts = 0
    while True:
        if cancel is not None and cancel.cancelled:
            raise Cancelled("Stopped waiting for the device.")
        attempts += 1
        try:
            if client.ping():
                break
        except DeviceError as err:
            last = err
        if clock() - start + poll_interval_s > timeout_s:
            reason = f" (last: {last.message})" if last else ""
            raise DeviceUnreachable(
                f"The supervisor at {where} did not answer within {timeout_s:g} s{reason}.",
                where=where,
                tried=(f"GET {where}/ping, {attempts} time(s) over {timeout_s:g} s",),
                hint="Check that the device booted from the card, is powered and on this "
                "network, and that its supervisor API is reachable (local mode) from here.",
            )
        sleep(poll_interval_s)
    first_ping_s = clock() - start
    info = client.device_info()
    state = client.device()
    if device_type and info.device_type != device_type:
        raise DeviceMismatch(
            f"The device at {where} is a {info.device_type or 'device of unknown type'}, "
            f"not a {device_type}.",
            where=where,
            field="device_type",
            expected=device_type,
            found=info.device_type or "",
        )
    if os_version and not same_os_version(os_version, state.os_version):
        raise DeviceMismatch(
            f"The device at {where} runs {state.os_version or 'an unknown OS version'}, "
            f"not {os_version}.",
            where=where,
            field="os_version",
            expected=os_version,
            found=state.os_version or "",
        )
    return BootCheck(
        address=where,
        up=True,
        device_type=info.device_type,
        os_version=state.os_version,
        supervisor_version=state.supervisor_version,
        first_ping_s=first_ping_s,
    )
