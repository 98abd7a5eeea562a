"""Write: check → confirm → write → verify, per target or per card, from a PreparedJob.

`write()` checks the targets with the drive rules (flasher.drives.constraints: errors reject,
warnings need `confirm`), then writes one card image to all of them at once through the writer
(block devices through the privileged helper, files in this process) and reads them back.
Per-target failures are results, not exceptions. Internal disks are written only when
`allow_internal` says they were confirmed on their own. `resolve_target` turns a path into a
Drive.

Core: never prints, imports no Qt.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flasher.drives.constraints import Problem, check_targets
from flasher.drives.early import EarlyDrives
from flasher.error_codes import Action
from flasher.errors import ConfigError, DriveError, DriveRejected
from flasher.events import CancelToken, EventCallback, Log, Phase, PhaseChanged, ignore_event
from flasher.models import Drive
from flasher.pipeline.prepare import CardImage, PreparedJob
from flasher.writer.client import TargetResult, write_image
from flasher.writer.filetarget import drive_not_found, is_device_namespace
from flasher.writer.launchers import Launcher

ConfirmWarnings = Callable[[Sequence[Problem]], bool]


def accept_warnings(_warnings: Sequence[Problem]) -> bool:
    """A `confirm` for callers that have consent up front (a bench erases every card)."""
    return True


@dataclass(frozen=True)
class WriteOutcome:
    """One TargetResult per target, in order, and the warnings that were accepted."""

    results: tuple[TargetResult, ...]
    warnings: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def require_targets(targets: Sequence[object]) -> None:
    """ConfigError when there is nothing to write to."""
    if not targets:
        raise ConfigError(
            "target",
            "at least one target is required",
            action=Action.NAME_TARGET,
        )


def resolve_target(path: str, early: EarlyDrives | None = None) -> Drive:
    """A Drive for `path`: the block device as the system sees it now, or a regular file.

    A missing path is a new regular file (a card image to ship, a VM disk), except in the
    device namespace (/dev, /proc, /sys), where it is a drive that was not found. `early`
    may hold the block device's drive, looked up since the command started.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if is_device_namespace(path):
            raise drive_not_found(path) from None
        parent = Path(path).resolve().parent
        if not parent.is_dir():
            raise ConfigError(
                "target",
                f"{parent} does not exist",
                hint="Create the folder or choose another target path.",
            ) from None
        return Drive(path=os.path.abspath(path), size_bytes=0, is_file=True, description="new file")
    if stat.S_ISREG(st.st_mode) and not is_device_namespace(path):
        # Not resolved: the final symlink, if any, is judged when the file is checked and opened.
        return Drive(
            path=os.path.abspath(path),
            size_bytes=st.st_size,
            is_file=True,
            description="regular file",
        )
    if not stat.S_ISBLK(st.st_mode):
        if is_device_namespace(path):
            raise drive_not_found(path)
        raise ConfigError(
            "target",
            f"{path} is neither a block device nor a regular file",
            hint="Choose a listed drive or a file path.",
            action=Action.LIST_DRIVES,
        )
    drive = early.take(path, st.st_rdev) if early is not None else None
    if drive is None:
        from flasher.drives.discovery import find_drive  # udev is needed for drives only

        drive = find_drive(path)
    if drive is None:
        raise DriveError(
            f"{path} is not a drive Flasher can write.",
            hint="Check that the card is inserted and choose it from the drive list.",
            action=Action.LIST_DRIVES,
        )
    return drive


def check(
    prepared: PreparedJob,
    targets: Sequence[Drive],
    *,
    confirm: ConfirmWarnings | None = None,
    allow_internal: bool = False,
    on_event: EventCallback = ignore_event,
) -> tuple[Problem, ...]:
    """The accepted warnings; DriveRejected for any error, or warnings `confirm` declines.

    An internal disk is an error unless `allow_internal` (then a warning for `confirm`)."""
    on_event(PhaseChanged(Phase.CHECKING))
    warnings = check_targets(
        targets, prepared.size_bytes, prepared.image_file, allow_internal=allow_internal
    )
    if warnings and not (confirm is not None and confirm(warnings)):
        raise DriveRejected(
            "Flashing needs your confirmation: " + " ".join(w.message for w in warnings),
            action=Action.CONFIRM_DRIVE_WARNINGS,
            problems=tuple(warnings),
        )
    for w in warnings:
        on_event(Log("warning", w.message, target=w.target))
    return tuple(warnings)


def write(
    prepared: PreparedJob,
    targets: Sequence[Drive],
    *,
    card: CardImage | None = None,
    verify: bool = True,
    confirm: ConfirmWarnings | None = None,
    allow_internal: bool = False,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    launcher: Launcher | None = None,
) -> WriteOutcome:
    """Check `targets`, then write `card` (default: the prepared image) to all of them at once
    and, with `verify`, read them back. `allow_internal`: the internal disks among `targets`
    were confirmed on their own (see `check`).

    Raises before writing when a target is rejected (DriveRejected) and for job-level writer
    failures; a target that fails while written is a failed TargetResult.
    """
    require_targets(targets)
    image = card if card is not None else prepared.image
    warnings = check(
        prepared, targets, confirm=confirm, allow_internal=allow_internal, on_event=on_event
    )
    results = write_image(
        image.feed,
        targets,
        ranges=image.ranges,
        scrub=image.scrub,
        verify=verify,
        write_all=prepared.write_all,
        on_event=on_event,
        cancel=cancel,
        launcher=launcher,
        allow_internal=allow_internal,
    )
    return WriteOutcome(tuple(results), warnings)
