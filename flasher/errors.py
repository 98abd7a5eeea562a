"""The FlasherError tree: every failure the core reports, with a message, a hint and an exit code.

Imports only the standard library (the root writer helper uses it).

    FlasherError                      str(e): one sentence; e.hint: what to do next
    ├── ConfigError                   invalid settings, found before any I/O (field, rule)
    ├── CatalogError                  unknown device type or version, bad API answer
    │   ├── ApiError                  the API failed or could not be reached (status)
    │   └── AuthError                 401/403: not logged in or not allowed
    ├── DownloadError                 broken, short or corrupt download
    ├── CacheError                    the image cache cannot be used
    ├── ImageError                    unsupported, corrupt or truncated image (path, problem)
    ├── DriveError                    a drive cannot be listed or opened
    │   ├── DriveRejected             a constraint blocks this target (problems)
    │   └── DriveGone                 unplugged or detached while in use
    ├── WriterError                   the writer helper failed
    │   ├── AuthorizationDenied       the privilege prompt was dismissed or refused
    │   ├── WriterProtocolError       version mismatch or garbled stream
    │   └── WriteFailed               an I/O error while writing (offset, errno)
    ├── VerificationFailed            read-back differs from what was written (offset range)
    ├── Cancelled                     the user or a caller cancelled
    └── ReleaseUpdateError            a release update cannot be described or prepared
        ├── ReleaseNotFound           no successful release has this ID or commit prefix
        ├── ReleaseAmbiguous          several successful releases match a commit prefix
        ├── ReleasesNotInOneFleet     the two releases belong to different fleets
        ├── ReleaseImageNotFound      a release's image is missing or did not build
        ├── DeltaRequestFailed        the delta server refused or failed a delta request
        └── UpdateTimeout             the update did not become ready in time
"""

from __future__ import annotations

from typing import Any, ClassVar

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3
EXIT_DRIVE = 4
EXIT_CANCELLED = 130


class FlasherError(Exception):
    """Base of every error Flasher reports to a person or a script."""

    code: ClassVar[str] = "error"
    exit_code: ClassVar[int] = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.fields: dict[str, Any] = fields

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: code, message, hint and the structured fields."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        if self.fields:
            out["details"] = {k: _plain(v) for k, v in self.fields.items()}
        return out

    def __str__(self) -> str:
        return self.message


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class ConfigError(FlasherError):
    """A setting is invalid; raised before any I/O. `field` names it, `rule` says what it breaks."""

    code = "invalid_config"
    exit_code = EXIT_USAGE

    def __init__(self, field: str, rule: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {rule}", hint=hint, field=field, rule=rule)
        self.field = field
        self.rule = rule


class CatalogError(FlasherError):
    code = "catalog"


class ApiError(CatalogError):
    code = "api"


class AuthError(CatalogError):
    code = "auth"


class DownloadError(FlasherError):
    code = "download"


class CacheError(FlasherError):
    code = "cache"


class ImageError(FlasherError):
    """An image cannot be used. `path` names the file, `problem` is a short machine word."""

    code = "image"

    def __init__(
        self, path: str, message: str, *, problem: str = "invalid", hint: str | None = None
    ) -> None:
        super().__init__(f"{path}: {message}", hint=hint, path=path, problem=problem)
        self.path = path
        self.problem = problem


class DriveError(FlasherError):
    code = "drive"
    exit_code = EXIT_DRIVE


class DriveRejected(DriveError):
    code = "drive_rejected"


class CounterfeitCard(DriveRejected):
    """The card holds less than it claims (writes past its real capacity wrap or vanish)."""

    code = "counterfeit"


class DriveGone(DriveError):
    code = "drive_gone"
    exit_code = EXIT_ERROR


class WriterError(FlasherError):
    code = "writer"


class AuthorizationDenied(WriterError):
    code = "authorization_denied"


class WriterProtocolError(WriterError):
    code = "protocol"


class WriteFailed(WriterError):
    code = "write_failed"


class ReportDbError(FlasherError):
    """The bench's report database cannot be reached or refused the records."""

    code = "report_db"


class VerificationFailed(FlasherError):
    code = "verify_mismatch"
    exit_code = EXIT_VERIFY


class Cancelled(FlasherError):
    code = "cancelled"
    exit_code = EXIT_CANCELLED

    def __init__(self, message: str = "Cancelled.", **fields: Any) -> None:
        super().__init__(message, **fields)


class ReleaseUpdateError(FlasherError):
    code = "release_update"


class ReleaseNotFound(ReleaseUpdateError):
    """`release` is the ID (int) or commit prefix (str) that matched no successful release."""

    code = "release_not_found"

    def __init__(self, release: int | str) -> None:
        super().__init__(
            f"Release not found: {release}",
            hint="Check the release ID or commit; only successful releases count.",
            release=release,
        )
        self.release = release


class ReleaseAmbiguous(ReleaseUpdateError):
    code = "release_ambiguous"

    def __init__(self, commit: str, matches: int) -> None:
        super().__init__(
            "Release is ambiguous: There are multiple releases matching the release hash "
            f"'{commit}'",
            hint="Give more characters of the commit, or the release ID.",
            commit=commit,
            matches=matches,
        )
        self.commit = commit
        self.matches = matches


class ReleasesNotInOneFleet(ReleaseUpdateError):
    code = "releases_not_in_one_fleet"

    def __init__(self, from_fleet_id: int | None, to_fleet_id: int | None) -> None:
        super().__init__(
            "Source and target release must be from the same application",
            hint="Pick two releases of the same fleet.",
            from_fleet_id=from_fleet_id,
            to_fleet_id=to_fleet_id,
        )
        self.from_fleet_id = from_fleet_id
        self.to_fleet_id = to_fleet_id


class ReleaseImageNotFound(ReleaseUpdateError):
    code = "release_image_not_found"

    def __init__(self, image_id: int) -> None:
        super().__init__(
            f"Image not found: {image_id}",
            hint="The release refers to an image that is missing or did not build.",
            image_id=image_id,
        )
        self.image_id = image_id


class DeltaRequestFailed(ReleaseUpdateError):
    """`status` is the delta server's HTTP status, or None when no answer arrived."""

    code = "delta_request_failed"

    def __init__(self, message: str, *, status: int | None, url: str) -> None:
        super().__init__(
            message,
            hint="The delta server may be busy or down; try again later.",
            status=status,
            url=url,
        )
        self.status = status
        self.url = url


class UpdateTimeout(ReleaseUpdateError):
    code = "update_timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            "timeout",
            hint="The deltas are still being built; wait longer or try again later.",
            timeout_s=timeout_s,
        )
        self.timeout_s = timeout_s


ERROR_CLASSES: dict[str, type[FlasherError]] = {
    cls.code: cls
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
        ReleaseUpdateError,
        ReleaseNotFound,
        ReleaseAmbiguous,
        ReleasesNotInOneFleet,
        ReleaseImageNotFound,
        DeltaRequestFailed,
        UpdateTimeout,
    )
}
