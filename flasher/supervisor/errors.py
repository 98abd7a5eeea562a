"""The device errors: every failure of a Supervisor API call a caller must tell apart.

    DeviceError                     (device)                      exit 1
    ├── DeviceUnauthorized          401: the key was refused      exit 7
    ├── DeviceLocked                423: an update lock is held   exit 6
    ├── DeviceBadRequest            400: the supervisor refused the request
    ├── DeviceNotFound              404: no such app, service or path
    ├── DeviceConflict              409: the app is not on the device (or not in the key's scope)
    ├── SupervisorFailed            500/503 (and other answers): the supervisor failed
    ├── DeviceOffline               the balena API knows no online device for the filter  exit 5
    ├── DeviceUnreachable           refused, timed out, or the proxy could not reach it   exit 5
    └── DeviceMismatch              the device is not the type or OS version expected     exit 8

Each carries typed attributes (status, the supervisor's message, the address) and a neutral
hint. Imports only flasher.errors.
"""

from __future__ import annotations

from typing import Any

from flasher.errors import EXIT_ERROR, FlasherError

EXIT_DEVICE_UNREACHABLE = 5
EXIT_DEVICE_LOCKED = 6
EXIT_DEVICE_UNAUTHORIZED = 7
EXIT_DEVICE_MISMATCH = 8


class DeviceError(FlasherError):
    """A Supervisor API call failed. `where` names the device (an address or a balena filter)."""

    code = "device"
    exit_code = EXIT_ERROR

    def __init__(
        self,
        message: str,
        *,
        where: str,
        status: int | None = None,
        server_message: str = "",
        hint: str | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(
            message,
            hint=hint,
            where=where,
            status=status,
            server_message=server_message,
            **fields,
        )
        self.where = where
        self.status = status
        self.server_message = server_message


class DeviceUnauthorized(DeviceError):
    """`expected_key` says which key the device wants (a phrase, never the key itself)."""

    code = "device_unauthorized"
    exit_code = EXIT_DEVICE_UNAUTHORIZED

    def __init__(self, message: str, *, where: str, expected_key: str, **fields: Any) -> None:
        super().__init__(
            message,
            where=where,
            hint=f"Use {expected_key}.",
            expected_key=expected_key,
            **fields,
        )
        self.expected_key = expected_key


class DeviceLocked(DeviceError):
    """`lock_message` is the supervisor's own words about the lock."""

    code = "device_locked"
    exit_code = EXIT_DEVICE_LOCKED

    def __init__(self, message: str, *, where: str, lock_message: str, **fields: Any) -> None:
        super().__init__(
            message,
            where=where,
            server_message=lock_message,
            hint="Wait for the application to release its update lock, or override the lock.",
            lock_message=lock_message,
            **fields,
        )
        self.lock_message = lock_message


class DeviceBadRequest(DeviceError):
    code = "device_bad_request"


class DeviceNotFound(DeviceError):
    code = "device_not_found"


class DeviceConflict(DeviceError):
    code = "device_conflict"


class SupervisorFailed(DeviceError):
    code = "device_supervisor_error"


class DeviceOffline(DeviceError):
    code = "device_offline"
    exit_code = EXIT_DEVICE_UNREACHABLE


class DeviceUnreachable(DeviceError):
    """`tried` lists what was attempted (addresses, attempts, the proxy)."""

    code = "device_unreachable"
    exit_code = EXIT_DEVICE_UNREACHABLE

    def __init__(self, message: str, *, where: str, tried: tuple[str, ...], **fields: Any) -> None:
        super().__init__(message, where=where, tried=list(tried), **fields)
        self.tried = tried


class DeviceMismatch(DeviceError):
    """`field` is what differs ("device_type" or "os_version"); `expected` and `found` too."""

    code = "device_mismatch"
    exit_code = EXIT_DEVICE_MISMATCH

    def __init__(
        self, message: str, *, where: str, field: str, expected: str, found: str, **fields: Any
    ) -> None:
        super().__init__(
            message,
            where=where,
            hint="Check that the card was made for this device and OS version.",
            field=field,
            expected=expected,
            found=found,
            **fields,
        )
        self.field = field
        self.expected = expected
        self.found = found


DEVICE_ERROR_CLASSES: dict[str, type[DeviceError]] = {
    cls.code: cls
    for cls in (
        DeviceError,
        DeviceUnauthorized,
        DeviceLocked,
        DeviceBadRequest,
        DeviceNotFound,
        DeviceConflict,
        SupervisorFailed,
        DeviceOffline,
        DeviceUnreachable,
        DeviceMismatch,
    )
}
