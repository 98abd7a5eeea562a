"""The device errors: one stable JSON code each, apart from the rest of the tree, and the exit
codes the README documents."""

from __future__ import annotations

import pytest

from flasher.errors import ERROR_CLASSES
from flasher.supervisor.errors import (
    DEVICE_ERROR_CLASSES,
    DeviceLocked,
    DeviceMismatch,
    DeviceOffline,
    DeviceUnauthorized,
    DeviceUnreachable,
)


def test_device_codes_are_unique_and_apart_from_the_others() -> None:
    codes = [cls.code for cls in DEVICE_ERROR_CLASSES.values()]
    assert len(codes) == len(set(codes))
    assert not set(codes) & set(ERROR_CLASSES)


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (DeviceOffline("x", where="w"), 5),
        (DeviceUnreachable("x", where="w", tried=("GET w/ping",)), 5),
        (DeviceLocked("x", where="w", lock_message="Lockfile exists"), 6),
        (DeviceUnauthorized("x", where="w", expected_key="the device's key"), 7),
        (DeviceMismatch("x", where="w", field="os_version", expected="a", found="b"), 8),
    ],
)
def test_exit_codes(error: Exception, exit_code: int) -> None:
    assert getattr(error, "exit_code") == exit_code  # noqa: B009


def test_locked_error_describes_itself_for_json() -> None:
    err = DeviceLocked("locked", where="http://d:48484", lock_message="Lockfile exists", status=423)
    assert err.to_dict()["details"]["lock_message"] == "Lockfile exists"
    assert err.to_dict()["details"]["status"] == 423
    assert "--" not in (err.hint or "")  # the core never words a hint as a CLI flag
