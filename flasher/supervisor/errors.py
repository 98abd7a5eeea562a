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
hint. Imports only flasher.errors and flasher.error_codes.
"""

from __future__ import annotations

from typing import ClassVar

from flasher.error_codes import Action, ErrorCode
from flasher.errors import EXIT_ERROR, FlasherError

EXIT_DEVICE_UNREACHABLE = 5
EXIT_DEVICE_LOCKED = 6
EXIT_DEVICE_UNAUTHORIZED = 7
EXIT_DEVICE_MISMATCH = 8


class DeviceError(FlasherError):
    """A Supervisor API call failed. `where` names the device (an address or a balena filter),
    `status` and `server_message` the supervisor's answer, `matches` how many devices matched."""

    code = ErrorCode.DEVICE
    exit_code = EXIT_ERROR
    detail_names: ClassVar[tuple[str, ...]] = ("where", "status", "server_message", "matches")

    def __init__(
        self,
        message: str,
        *,
        where: str,
        status: int | None = None,
        server_message: str = "",
        matches: int | None = None,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(message, hint=hint, action=action)
        self.where = where
        self.status = status
        self.server_message = server_message
        self.matches = matches


class DeviceUnauthorized(DeviceError):
    """`expected_key` says which key the device wants (a phrase, never the key itself)."""

    code = ErrorCode.DEVICE_UNAUTHORIZED
    exit_code = EXIT_DEVICE_UNAUTHORIZED
    detail_names: ClassVar[tuple[str, ...]] = (*DeviceError.detail_names, "expected_key")

    def __init__(
        self,
        message: str,
        *,
        where: str,
        expected_key: str,
        status: int | None = None,
        server_message: str = "",
    ) -> None:
        super().__init__(
            message,
            where=where,
            status=status,
            server_message=server_message,
            hint=f"Use {expected_key}.",
        )
        self.expected_key = expected_key


class DeviceLocked(DeviceError):
    """`lock_message` is the supervisor's own words about the lock."""

    code = ErrorCode.DEVICE_LOCKED
    exit_code = EXIT_DEVICE_LOCKED
    detail_names: ClassVar[tuple[str, ...]] = (*DeviceError.detail_names, "lock_message")

    def __init__(
        self, message: str, *, where: str, lock_message: str, status: int | None = None
    ) -> None:
        super().__init__(
            message,
            where=where,
            status=status,
            server_message=lock_message,
            hint="Wait for the application to release its update lock.",
            action=Action.FORCE_LOCKED_DEVICE,
        )
        self.lock_message = lock_message


class DeviceBadRequest(DeviceError):
    code = ErrorCode.DEVICE_BAD_REQUEST


class DeviceNotFound(DeviceError):
    code = ErrorCode.DEVICE_NOT_FOUND


class DeviceConflict(DeviceError):
    code = ErrorCode.DEVICE_CONFLICT


class SupervisorFailed(DeviceError):
    code = ErrorCode.DEVICE_SUPERVISOR_ERROR


class DeviceOffline(DeviceError):
    code = ErrorCode.DEVICE_OFFLINE
    exit_code = EXIT_DEVICE_UNREACHABLE


class DeviceUnreachable(DeviceError):
    """`tried` lists what was attempted (addresses, attempts, the proxy)."""

    code = ErrorCode.DEVICE_UNREACHABLE
    exit_code = EXIT_DEVICE_UNREACHABLE
    detail_names: ClassVar[tuple[str, ...]] = (*DeviceError.detail_names, "tried")

    def __init__(
        self,
        message: str,
        *,
        where: str,
        tried: tuple[str, ...],
        status: int | None = None,
        server_message: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(
            message, where=where, status=status, server_message=server_message, hint=hint
        )
        self.tried = tried


class DeviceMismatch(DeviceError):
    """`field` is what differs ("device_type" or "os_version"); `expected` and `found` too."""

    code = ErrorCode.DEVICE_MISMATCH
    exit_code = EXIT_DEVICE_MISMATCH
    detail_names: ClassVar[tuple[str, ...]] = (
        *DeviceError.detail_names,
        "field",
        "expected",
        "found",
    )

    def __init__(self, message: str, *, where: str, field: str, expected: str, found: str) -> None:
        super().__init__(
            message,
            where=where,
            hint="Check that the card was made for this device and OS version.",
        )
        self.field = field
        self.expected = expected
        self.found = found


DEVICE_ERROR_CLASSES: dict[str, type[DeviceError]] = {
    cls.code.value: cls
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
