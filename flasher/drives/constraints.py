"""The rules that decide whether a drive may be written: errors block, warnings need consent.

Pure functions over Drive values (plus the source image's device number): system drive, too
small, read-only (the SD card's lock switch), holds the source image, drive gone are errors;
an internal (fixed) disk, a large drive (> 128 GB) and mounted (it will be unmounted) are
warnings. A file target in the device namespace (/dev, /proc, /sys, any devtmpfs) is a
drive that was not found. Imports only the standard library, flasher's value and error
modules and flasher.writer.filetarget.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from flasher.errors import DriveRejected
from flasher.models import Drive
from flasher.writer.filetarget import file_target_refusal

LARGE_DRIVE_BYTES = 128 * 10**9  # what Etcher and Imager call a "large drive"


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


class ProblemCode(enum.StrEnum):
    SYSTEM = "system"
    TOO_SMALL = "too_small"
    READ_ONLY = "read_only"
    SOURCE_DRIVE = "source_drive"
    GONE = "gone"
    DUPLICATE = "duplicate"
    LARGE = "large_drive"
    MOUNTED = "mounted"
    INTERNAL = "internal"
    NOT_FOUND = "not_found"
    FOREIGN_SYMLINK = "foreign_symlink"
    FOREIGN_FILE = "foreign_file"


@dataclass(frozen=True)
class Problem:
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


def _gb(size_bytes: int) -> str:
    return f"{size_bytes / 10**9:.1f} GB"


def source_device(source_path: str | os.PathLike[str] | None) -> str | None:
    """ "major:minor" of the filesystem that holds the source image (None without a source)."""
    if source_path is None:
        return None
    try:
        st = os.stat(source_path)
    except OSError:
        return None
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def _drive_devs(drive: Drive) -> set[str]:
    devs = {drive.dev} if drive.dev else set()
    for part in drive.partitions:
        if part.dev:
            devs.add(part.dev)
        devs.update(part.holders)
    return devs


def check_drive(
    drive: Drive,
    image_size_bytes: int,
    *,
    source_dev: str | None = None,
    source_path: str | None = None,
    present: Iterable[Drive] | None = None,
    allow_internal: bool = False,
) -> list[Problem]:
    """Every problem with writing an image of `image_size_bytes` to `drive`.

    `source_dev` is the device number of the filesystem holding the image (see
    `source_device`); `present`, when given, is the current drive list, to catch a drive that
    was unplugged or swapped since it was chosen. An internal disk is an error unless
    `allow_internal` says it was confirmed on its own (then a warning that still needs consent).
    """
    problems: list[Problem] = []

    def add(code: ProblemCode, severity: Severity, message: str, hint: str | None) -> None:
        problems.append(Problem(drive.path, code, severity, message, hint))

    if present is not None and not any(_same_drive(d, drive) for d in present):
        add(
            ProblemCode.GONE,
            Severity.ERROR,
            f"{drive.path} is no longer there (unplugged or replaced by another card).",
            "Insert the card again and pick it from a fresh drive list.",
        )
        return problems
    if drive.is_file:
        refusal = file_target_refusal(drive.path)
        if refusal is not None:
            code = ProblemCode(refusal.fields["problem"])
            add(code, Severity.ERROR, refusal.message, refusal.hint)
            return problems
        if source_path is not None and _same_file(drive.path, source_path):
            add(
                ProblemCode.SOURCE_DRIVE,
                Severity.ERROR,
                f"{drive.path} is the source image itself.",
                "Write to a different file.",
            )
        return problems
    if drive.system:
        add(
            ProblemCode.SYSTEM,
            Severity.ERROR,
            f"{drive.path} is a system drive; writing it would destroy the running system.",
            "Pick a removable card or USB drive.",
        )
    if drive.internal and not drive.system:
        add(
            ProblemCode.INTERNAL,
            Severity.WARNING if allow_internal else Severity.ERROR,
            f"{drive.path} is an internal disk, not a removable card; everything on it will be "
            "erased.",
            "Make sure this is the disk you mean to provision."
            if allow_internal
            else "Internal disks are written only when they are confirmed on their own.",
        )
    if drive.read_only:
        add(
            ProblemCode.READ_ONLY,
            Severity.ERROR,
            f"{drive.path} is write-protected.",
            "Slide the SD card's lock switch to unlocked and insert it again.",
        )
    if drive.size_bytes < image_size_bytes:
        add(
            ProblemCode.TOO_SMALL,
            Severity.ERROR,
            f"{drive.path} is too small: {_gb(drive.size_bytes)} for a "
            f"{_gb(image_size_bytes)} image.",
            f"Use a drive of at least {_gb(image_size_bytes)}.",
        )
    if source_dev is not None and source_dev in _drive_devs(drive):
        add(
            ProblemCode.SOURCE_DRIVE,
            Severity.ERROR,
            f"{drive.path} holds the source image (it is on a filesystem mounted from it).",
            "Copy the image to another disk, or pick another drive.",
        )
    if drive.size_bytes > LARGE_DRIVE_BYTES and not drive.system:
        add(
            ProblemCode.LARGE,
            Severity.WARNING,
            f"{drive.path} is unusually large for a card ({_gb(drive.size_bytes)}); "
            "is it really the one to erase?",
            None,
        )
    if drive.mountpoints and not drive.system:
        mounted = ", ".join(drive.mountpoints)
        add(
            ProblemCode.MOUNTED,
            Severity.WARNING,
            f"{drive.path} is mounted ({mounted}); it will be unmounted and erased.",
            None,
        )
    return problems


def _same_drive(a: Drive, b: Drive) -> bool:
    return (a.path, a.dev, a.serial, a.size_bytes) == (b.path, b.dev, b.serial, b.size_bytes)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_targets(
    drives: Sequence[Drive],
    image_size_bytes: int,
    source_path: str | os.PathLike[str] | None = None,
    *,
    present: Iterable[Drive] | None = None,
    allow_internal: bool = False,
) -> list[Problem]:
    """Check every target; raise DriveRejected listing all errors, else return the warnings.

    Warnings need explicit consent (`--yes` in the CLI, a dialog in the GUI); internal disks
    need `allow_internal` as well (their own flag in the CLI, a typed name in the GUI).
    """
    source_dev = source_device(source_path)
    source = os.fspath(source_path) if source_path is not None else None
    present_list = list(present) if present is not None else None
    problems: list[Problem] = []
    seen: set[str] = set()
    for drive in drives:
        key = drive.dev or os.path.abspath(drive.path)
        if key in seen:
            problems.append(
                Problem(
                    drive.path,
                    ProblemCode.DUPLICATE,
                    Severity.ERROR,
                    f"{drive.path} is listed twice.",
                    "Name each target once.",
                )
            )
            continue
        seen.add(key)
        problems += check_drive(
            drive,
            image_size_bytes,
            source_dev=source_dev,
            source_path=source,
            present=present_list,
            allow_internal=allow_internal,
        )
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if errors:
        raise rejection(errors)
    return [p for p in problems if p.severity is Severity.WARNING]


def rejection(errors: Sequence[Problem]) -> DriveRejected:
    """One DriveRejected naming every blocking problem; `details.problems` lists them."""
    if len(errors) == 1:
        message = errors[0].message
        hint = errors[0].hint
    else:
        message = "Some targets cannot be written: " + " ".join(p.message for p in errors)
        hint = "; ".join(dict.fromkeys(p.hint for p in errors if p.hint)) or None
    return DriveRejected(message, hint=hint, problems=[p.to_dict() for p in errors])
