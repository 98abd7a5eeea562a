"""The FlasherError tree: every failure the core reports, with a message, a hint and an exit code.

Imports only the standard library, flasher.error_codes and flasher.error_base, where the base
class, its details codec and the exit codes live (the root writer helper uses it).

    FlasherError                      str(e): one sentence; e.hint: what to do next
    ├── ConfigError                   invalid settings, found before any I/O (field, rule)
    ├── CatalogError                  unknown device type or version, bad API answer
    │   ├── ApiError                  the API failed or could not be reached (status, url, …)
    │   └── AuthError                 401/403: not logged in or not allowed
    ├── DownloadError                 broken, short or corrupt download (url, status, attempts)
    ├── CacheError                    the image cache cannot be used (path)
    ├── ImageError                    unsupported, corrupt or truncated image (path, problem)
    ├── DriveError                    a drive cannot be listed or opened (target)
    │   ├── DriveRejected             a constraint blocks this target (problem, problems)
    │   └── DriveGone                 unplugged or detached while in use (errno, offset)
    ├── WriterError                   the writer helper failed
    │   ├── AuthorizationDenied       the privilege prompt was dismissed or refused
    │   ├── WriterProtocolError       version mismatch or garbled stream
    │   └── WriteFailed               an I/O error while writing (offset, errno)
    ├── VerificationFailed            read-back differs from what was written (offset range)
    └── Cancelled                     the user or a caller cancelled

The device errors live in flasher.supervisor.errors, the release-update errors in
flasher.release_update.errors, OsUpdateError in flasher.balena.hup.

Each class declares its typed attributes in `detail_names`; `to_dict()` turns those (the ones
set) into `details`, and `from_details()` rebuilds the error from them (the writer protocol's
one decoder). `hint` is neutral prose; `action`, when set, names a next step each face words
its own way (see flasher.error_codes.Action). An OS error's own text goes in `cause`, never in
the message.
"""

from __future__ import annotations

from typing import ClassVar

from flasher.error_base import EXIT_CANCELLED as EXIT_CANCELLED
from flasher.error_base import EXIT_DRIVE as EXIT_DRIVE
from flasher.error_base import EXIT_ERROR as EXIT_ERROR
from flasher.error_base import EXIT_OK as EXIT_OK
from flasher.error_base import EXIT_USAGE as EXIT_USAGE
from flasher.error_base import EXIT_VERIFY as EXIT_VERIFY
from flasher.error_base import FlasherError as FlasherError
from flasher.error_codes import Action, DriveProblem, ErrorCode, ProblemCode


class ConfigError(FlasherError):
    """A setting is invalid; raised before any I/O. `field` names it, `rule` says what it breaks."""

    code = ErrorCode.INVALID_CONFIG
    exit_code = EXIT_USAGE
    detail_names: ClassVar[tuple[str, ...]] = ("field", "rule")

    def __init__(
        self, field: str, rule: str, *, hint: str | None = None, action: Action | None = None
    ) -> None:
        super().__init__(f"{field}: {rule}", hint=hint, action=action)
        self.field = field
        self.rule = rule


class CatalogError(FlasherError):
    """The catalog cannot answer: what was asked (`device_type`, `version`, `fleet`, `range`)
    and, for an API answer, its `status`, `path` and the server's own `server_message`."""

    code = ErrorCode.CATALOG
    detail_names: ClassVar[tuple[str, ...]] = (
        "device_type",
        "version",
        "fleet",
        "range",
        "status",
        "path",
        "server_message",
    )

    def __init__(
        self,
        message: str,
        *,
        device_type: str | None = None,
        version: str | None = None,
        fleet: str | int | None = None,
        range: str | None = None,
        status: int | None = None,
        path: str | None = None,
        server_message: str | None = None,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(message, hint=hint, action=action)
        self.device_type = device_type
        self.version = version
        self.fleet = fleet
        self.range = range
        self.status = status
        self.path = path
        self.server_message = server_message


class ApiError(CatalogError):
    """The API failed: `status` (None when unreachable), `url`, `attempts`, `retry_after_s`."""

    code = ErrorCode.API
    detail_names: ClassVar[tuple[str, ...]] = (
        *CatalogError.detail_names,
        "url",
        "attempts",
        "retry_after_s",
        "resource",
        "uuid",
    )

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        path: str | None = None,
        server_message: str | None = None,
        url: str | None = None,
        attempts: int | None = None,
        retry_after_s: float | None = None,
        resource: str | None = None,
        uuid: str | None = None,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(
            message,
            status=status,
            path=path,
            server_message=server_message,
            hint=hint,
            action=action,
        )
        self.url = url
        self.attempts = attempts
        self.retry_after_s = retry_after_s
        self.resource = resource
        self.uuid = uuid


class AuthError(CatalogError):
    code = ErrorCode.AUTH


class DownloadError(FlasherError):
    """A download failed: `url`, the HTTP `status`, `attempts`, the expected `sha256`, or the
    `problem` found in what arrived."""

    code = ErrorCode.DOWNLOAD
    detail_names: ClassVar[tuple[str, ...]] = (
        "url",
        "status",
        "attempts",
        "sha256",
        "problem",
        "cause",
    )

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        attempts: int | None = None,
        sha256: str | None = None,
        problem: ProblemCode | None = None,
        cause: str | None = None,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(message, hint=hint, action=action)
        self.cause = cause
        self.url = url
        self.status = status
        self.attempts = attempts
        self.sha256 = sha256
        self.problem = problem


class CacheError(FlasherError):
    """The image cache cannot be used; `path` names the folder or file, `cause` the OS's words."""

    code = ErrorCode.CACHE
    detail_names: ClassVar[tuple[str, ...]] = ("path", "cause")

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        cause: str | None = None,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(message, hint=hint, action=action)
        self.path = path
        self.cause = cause


class ImageError(FlasherError):
    """An image cannot be used. `path` names the file, `problem` says what is wrong."""

    code = ErrorCode.IMAGE
    detail_names: ClassVar[tuple[str, ...]] = ("path", "problem")

    def __init__(
        self,
        path: str,
        message: str,
        *,
        problem: ProblemCode = ProblemCode.INVALID,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(f"{path}: {message}", hint=hint, action=action)
        self.path = path
        self.problem = problem

    @property
    def reason(self) -> str:
        """The message without the file's path (for a file the user never named)."""
        return self.message.removeprefix(f"{self.path}: ")


class DriveError(FlasherError):
    """A drive cannot be listed or opened; `target` names it, `cause` carries the OS's words."""

    code = ErrorCode.DRIVE
    exit_code = EXIT_DRIVE
    detail_names: ClassVar[tuple[str, ...]] = ("target", "cause")

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        cause: str | None = None,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(message, hint=hint, action=action)
        self.target = target
        self.cause = cause


class DriveRejected(DriveError):
    """A target may not be written: one `problem` (the writer's check) or every blocking
    `problems` entry (the drive rules)."""

    code = ErrorCode.DRIVE_REJECTED
    detail_names: ClassVar[tuple[str, ...]] = ("target", "problem", "problems")

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        problem: ProblemCode | None = None,
        problems: tuple[DriveProblem, ...] = (),
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(message, target=target, hint=hint, action=action)
        self.problem = problem
        self.problems = problems


class CounterfeitCard(DriveRejected):
    """The card holds less than it claims (writes past its real capacity wrap or vanish):
    `advertised_bytes` is its stated size, `real_bytes` what it really holds."""

    code = ErrorCode.COUNTERFEIT
    detail_names: ClassVar[tuple[str, ...]] = (
        *DriveRejected.detail_names,
        "advertised_bytes",
        "real_bytes",
    )

    def __init__(
        self,
        message: str,
        *,
        target: str,
        advertised_bytes: int,
        real_bytes: int,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, target=target, problem=ProblemCode.COUNTERFEIT, hint=hint)
        self.advertised_bytes = advertised_bytes
        self.real_bytes = real_bytes


class DriveGone(DriveError):
    """The target went away while in use (`errno`, and the byte `offset` when writing)."""

    code = ErrorCode.DRIVE_GONE
    exit_code = EXIT_ERROR
    detail_names: ClassVar[tuple[str, ...]] = ("target", "errno", "offset", "cause")

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        errno: int | None = None,
        offset: int | None = None,
        cause: str | None = None,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(message, target=target, cause=cause, hint=hint, action=action)
        self.errno = errno
        self.offset = offset


class WriterError(FlasherError):
    """The writer helper failed: the `target`, the `path` of a helper file, the helper's
    `helper_exit_code` and the tail of its `stderr`, or the `argv0` that could not start."""

    code = ErrorCode.WRITER
    detail_names: ClassVar[tuple[str, ...]] = (
        "target",
        "path",
        "helper_exit_code",
        "stderr",
        "argv0",
    )

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        path: str | None = None,
        helper_exit_code: int | None = None,
        stderr: str | None = None,
        argv0: str | None = None,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(message, hint=hint, action=action)
        self.target = target
        self.path = path
        self.helper_exit_code = helper_exit_code
        self.stderr = stderr
        self.argv0 = argv0


class AuthorizationDenied(WriterError):
    code = ErrorCode.AUTHORIZATION_DENIED


class WriterProtocolError(WriterError):
    code = ErrorCode.PROTOCOL


class WriteFailed(WriterError):
    """An I/O error on a target: the `errno` at byte `offset` of `target`."""

    code = ErrorCode.WRITE_FAILED
    detail_names: ClassVar[tuple[str, ...]] = ("target", "offset", "errno")

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        offset: int | None = None,
        errno: int | None = None,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(message, target=target, hint=hint, action=action)
        self.offset = offset
        self.errno = errno


class ReportDbError(FlasherError):
    """The bench's report database cannot be reached or refused the records."""

    code = ErrorCode.REPORT_DB


class VerificationFailed(FlasherError):
    """The read-back differs: first at byte `offset`, inside [`range_start`, `range_end`)."""

    code = ErrorCode.VERIFY_MISMATCH
    exit_code = EXIT_VERIFY
    detail_names: ClassVar[tuple[str, ...]] = ("target", "offset", "range_start", "range_end")

    def __init__(
        self,
        message: str,
        *,
        target: str | None = None,
        offset: int | None = None,
        range_start: int | None = None,
        range_end: int | None = None,
        hint: str | None = None,
        action: Action | None = None,
    ) -> None:
        super().__init__(message, hint=hint, action=action)
        self.target = target
        self.offset = offset
        self.range_start = range_start
        self.range_end = range_end


class Cancelled(FlasherError):
    code = ErrorCode.CANCELLED
    exit_code = EXIT_CANCELLED
    detail_names: ClassVar[tuple[str, ...]] = ("target",)

    def __init__(self, message: str = "Cancelled.", *, target: str | None = None) -> None:
        super().__init__(message)
        self.target = target


ERROR_CLASSES: dict[str, type[FlasherError]] = {
    cls.code.value: cls
    for cls in (
        FlasherError,
        ConfigError,
        CatalogError,
        ApiError,
        AuthError,
        DownloadError,
        CacheError,
        ImageError,
        DriveError,
        DriveRejected,
        CounterfeitCard,
        DriveGone,
        WriterError,
        AuthorizationDenied,
        WriterProtocolError,
        WriteFailed,
        VerificationFailed,
        ReportDbError,
        Cancelled,
    )
}
