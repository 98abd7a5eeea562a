"""The closed vocabularies errors carry: error codes, problem kinds, actions, drive problems.

Every `code` and `problem` value that reaches `--json` (or the writer protocol) is a member of
`ErrorCode` or `ProblemCode`; the README lists them all, and a test keeps the two in step. An
`Action` names the next step an error suggests in words no face owns: the CLI words it as an
option or a command, the desktop app as a button or a setting. Imports only the standard library
(the root writer helper uses it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class ErrorCode(enum.StrEnum):
    """The JSON `code` of every FlasherError class (one class per code)."""

    ERROR = "error"
    INVALID_CONFIG = "invalid_config"
    CATALOG = "catalog"
    API = "api"
    AUTH = "auth"
    OS_UPDATE = "os_update"
    DOWNLOAD = "download"
    CACHE = "cache"
    IMAGE = "image"
    DRIVE = "drive"
    DRIVE_REJECTED = "drive_rejected"
    DRIVE_GONE = "drive_gone"
    COUNTERFEIT = "counterfeit"
    WRITER = "writer"
    AUTHORIZATION_DENIED = "authorization_denied"
    PROTOCOL = "protocol"
    WRITE_FAILED = "write_failed"
    VERIFY_MISMATCH = "verify_mismatch"
    CANCELLED = "cancelled"
    REPORT_DB = "report_db"
    RELEASE_UPDATE = "release_update"
    RELEASE_NOT_FOUND = "release_not_found"
    RELEASE_AMBIGUOUS = "release_ambiguous"
    RELEASES_NOT_IN_ONE_FLEET = "releases_not_in_one_fleet"
    RELEASE_IMAGE_NOT_FOUND = "release_image_not_found"
    DELTA_REQUEST_FAILED = "delta_request_failed"
    UPDATE_TIMEOUT = "update_timeout"
    DEVICE = "device"
    DEVICE_UNAUTHORIZED = "device_unauthorized"
    DEVICE_LOCKED = "device_locked"
    DEVICE_BAD_REQUEST = "device_bad_request"
    DEVICE_NOT_FOUND = "device_not_found"
    DEVICE_CONFLICT = "device_conflict"
    DEVICE_SUPERVISOR_ERROR = "device_supervisor_error"
    DEVICE_OFFLINE = "device_offline"
    DEVICE_UNREACHABLE = "device_unreachable"
    DEVICE_MISMATCH = "device_mismatch"


class ProblemCode(enum.StrEnum):
    """What exactly is wrong with an image, a file or a drive (`details.problem`)."""

    # images and files
    INVALID = "invalid"
    NOT_FOUND = "not_found"
    NOT_A_FILE = "not_a_file"
    NOT_A_DIRECTORY = "not_a_directory"
    IS_A_DIRECTORY = "is_a_directory"
    NOT_EMPTY = "not_empty"
    UNREADABLE = "unreadable"
    UNWRITABLE = "unwritable"
    EMPTY = "empty"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    COMPRESSED = "compressed"
    UNSUPPORTED = "unsupported"
    NOT_AN_IMAGE = "not_an_image"
    NO_IMAGE_IN_ARCHIVE = "no_image_in_archive"
    CHECKSUM = "checksum"
    NO_INTEGRITY = "no_integrity"
    BAD_BMAP = "bad_bmap"
    BMAP_MISMATCH = "bmap_mismatch"
    BAD_PARTITION_TABLE = "bad_partition_table"
    NO_BOOT_PARTITION = "no_boot_partition"
    BOOT_NOT_FAT = "boot_not_fat"
    BAD_MANIFEST = "bad_manifest"
    NO_CONFIG_JSON = "no_config_json"
    BAD_FILESYSTEM = "bad_filesystem"
    NOT_EXT4 = "not_ext4"
    CORRUPT_FILESYSTEM = "corrupt_filesystem"
    NEEDS_RECOVERY = "needs_recovery"
    BAD_NAME = "bad_name"
    NO_SPACE = "no_space"
    # drives and targets
    SYSTEM = "system"
    TOO_SMALL = "too_small"
    READ_ONLY = "read_only"
    SOURCE_DRIVE = "source_drive"
    GONE = "gone"
    DUPLICATE = "duplicate"
    LARGE = "large_drive"
    MOUNTED = "mounted"
    INTERNAL = "internal"
    PARTITION = "partition"
    BUSY = "busy"
    NOT_ABSOLUTE = "not_absolute"
    NOT_BLOCK_DEVICE = "not_block_device"
    DEVICE_CHANGED = "device_changed"
    SIZE_CHANGED = "size_changed"
    SERIAL_CHANGED = "serial_changed"
    FOREIGN_SYMLINK = "foreign_symlink"
    FOREIGN_FILE = "foreign_file"
    COUNTERFEIT = "counterfeit"


class Action(enum.StrEnum):
    """A next step each face words its own way (an option in the CLI, a control in the app)."""

    NAME_IMAGE = "name_image"
    NAME_TARGET = "name_target"
    LIST_DRIVES = "list_drives"
    CONFIRM_DRIVE_WARNINGS = "confirm_drive_warnings"
    ALLOW_INTERNAL_DISK = "allow_internal_disk"
    USE_SANDBOX = "use_sandbox"
    LOG_IN = "log_in"
    CHECK_API_URL = "check_api_url"
    LIST_DEVICE_TYPES = "list_device_types"
    LIST_OS_VERSIONS = "list_os_versions"
    LIST_UPDATE_TARGETS = "list_update_targets"
    DOWNLOAD_OS = "download_os"
    FORCE_LOCKED_DEVICE = "force_locked_device"
    NAME_SERVICE = "name_service"
    CHOOSE_REPORT_FILE = "choose_report_file"
    SET_CACHE_DIR = "set_cache_dir"
    GIVE_PROVISIONING_KEY = "give_provisioning_key"
    SHOW_DETAILS = "show_details"


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class DriveProblem:
    """One reason a drive is refused (error) or needs confirmation (warning)."""

    target: str
    code: ProblemCode
    severity: Severity
    message: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "code": self.code.value,
            "severity": self.severity.value,
            "message": self.message,
        }
        if self.hint:
            out["hint"] = self.hint
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriveProblem:
        """The inverse of to_dict; ValueError on an unknown code or severity."""
        hint = data.get("hint")
        return cls(
            target=str(data["target"]),
            code=ProblemCode(data["code"]),
            severity=Severity(data["severity"]),
            message=str(data["message"]),
            hint=None if hint is None else str(hint),
        )
