"""The release-update errors: what keeps a release update from being described or prepared.

    ReleaseUpdateError            a release update cannot be described or prepared
    ├── ReleaseNotFound           no successful release has this ID or commit prefix
    ├── ReleaseAmbiguous          several successful releases match a commit prefix
    ├── ReleasesNotInOneFleet     the two releases belong to different fleets
    ├── ReleaseImageNotFound      a release's image is missing or did not build
    ├── DeltaRequestFailed        the delta server refused or failed a delta request
    └── UpdateTimeout             the update did not become ready in time

Imports only flasher.errors and flasher.error_codes.
"""

from __future__ import annotations

from typing import ClassVar

from flasher.error_codes import ErrorCode
from flasher.errors import FlasherError


class ReleaseUpdateError(FlasherError):
    code = ErrorCode.RELEASE_UPDATE


class ReleaseNotFound(ReleaseUpdateError):
    """`release` is the ID (int) or commit prefix (str) that matched no successful release."""

    code = ErrorCode.RELEASE_NOT_FOUND
    detail_names: ClassVar[tuple[str, ...]] = ("release",)

    def __init__(self, release: int | str) -> None:
        super().__init__(
            f"Release not found: {release}",
            hint="Check the release ID or commit; only successful releases count.",
        )
        self.release = release


class ReleaseAmbiguous(ReleaseUpdateError):
    code = ErrorCode.RELEASE_AMBIGUOUS
    detail_names: ClassVar[tuple[str, ...]] = ("commit", "matches")

    def __init__(self, commit: str, matches: int) -> None:
        super().__init__(
            "Release is ambiguous: There are multiple releases matching the release hash "
            f"'{commit}'",
            hint="Give more characters of the commit, or the release ID.",
        )
        self.commit = commit
        self.matches = matches


class ReleasesNotInOneFleet(ReleaseUpdateError):
    code = ErrorCode.RELEASES_NOT_IN_ONE_FLEET
    detail_names: ClassVar[tuple[str, ...]] = ("from_fleet_id", "to_fleet_id")

    def __init__(self, from_fleet_id: int | None, to_fleet_id: int | None) -> None:
        super().__init__(
            "Source and target release must be from the same application",
            hint="Pick two releases of the same fleet.",
        )
        self.from_fleet_id = from_fleet_id
        self.to_fleet_id = to_fleet_id


class ReleaseImageNotFound(ReleaseUpdateError):
    code = ErrorCode.RELEASE_IMAGE_NOT_FOUND
    detail_names: ClassVar[tuple[str, ...]] = ("image_id",)

    def __init__(self, image_id: int) -> None:
        super().__init__(
            f"Image not found: {image_id}",
            hint="The release refers to an image that is missing or did not build.",
        )
        self.image_id = image_id


class DeltaRequestFailed(ReleaseUpdateError):
    """`status` is the delta server's HTTP status, or None when no answer arrived."""

    code = ErrorCode.DELTA_REQUEST_FAILED
    detail_names: ClassVar[tuple[str, ...]] = ("status", "url")

    def __init__(self, message: str, *, status: int | None, url: str) -> None:
        super().__init__(message, hint="The delta server may be busy or down; try again later.")
        self.status = status
        self.url = url


class UpdateTimeout(ReleaseUpdateError):
    code = ErrorCode.UPDATE_TIMEOUT
    detail_names: ClassVar[tuple[str, ...]] = ("timeout_s",)

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            "timeout",
            hint="The deltas are still being built; wait longer or try again later.",
        )
        self.timeout_s = timeout_s
