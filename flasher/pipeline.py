"""One flash job for N targets: resolve → download → unpack → configure → check → write → verify.

The single orchestration function every face calls (CLI, GUI, bench). Steps 2–4 are cached, so the
second card of a batch starts at the check. Synchronous; events go to `on_event`; cancellation
through a CancelToken. Never prints; imports no Qt.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flasher.drives.constraints import Problem, check_targets
from flasher.errors import ConfigError, DriveError, DriveRejected
from flasher.events import CancelToken, EventCallback, Log, Phase, PhaseChanged, ignore_event
from flasher.image.byteio import FileReader
from flasher.image.configure import PreparedImage, prepare_image
from flasher.image.inspection import ImageIdentity, read_image_identity
from flasher.image.integrity import IntegrityReport, bmap_checksummed, check_image, source_file
from flasher.image.partitions import read_partition_table
from flasher.image.sparse import AllocationMap, allocation_map
from flasher.models import DeviceConfig, Drive
from flasher.provider import ImageProvider, ResolvedImage, SourceSpec
from flasher.validation import validate_device_config
from flasher.writer.client import ImageFeed, TargetResult, write_image
from flasher.writer.filetarget import drive_not_found, is_device_namespace
from flasher.writer.launchers import Launcher

ConfirmWarnings = Callable[[Sequence[Problem]], bool]


@dataclass(frozen=True)
class FlashJob:
    """What to flash, how to configure it, and where.

    `config` configures the image; `config_from_image` builds the configuration once the image
    is known (its device type and version are the defaults); with neither, the image is
    flashed as it is.
    """

    source: SourceSpec
    targets: tuple[str, ...] = ()
    config: DeviceConfig | None = None
    config_from_image: Callable[[ImageIdentity], DeviceConfig] | None = None
    verify: bool = True
    write_all: bool = False
    bmap_path: str | None = None
    expected_sha256: str | None = None  # of the decoded image (or the file as given)
    allow_internal: bool = False  # internal disks were confirmed on their own


@dataclass(frozen=True)
class FlashReport:
    image_path: str
    size_bytes: int
    mapped_bytes: int
    image_sha256: str | None
    config_sha256: str | None
    device_type: str | None
    os_version: str | None
    results: tuple[TargetResult, ...]
    warnings: tuple[Problem, ...] = ()
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    integrity: IntegrityReport | None = None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def resolve_target(path: str) -> Drive:
    """A Drive for `path`: the block device as the system sees it now, or a regular file.

    A missing path is a new regular file (a card image to ship, a VM disk), except in the
    device namespace (/dev, /proc, /sys), where it is a drive that was not found.
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
            hint="Choose a drive from 'flasher drives' or a file path.",
        )
    from flasher.drives.discovery import find_drive  # udev is needed for drives only

    drive = find_drive(path)
    if drive is None:
        raise DriveError(
            f"{path} is not a drive Flasher can write.",
            hint="Run 'flasher drives --all' to list the drives.",
        )
    return drive


def _plain_map(
    reader: FileReader, name: str, bmap_path: str | None, *, verify_checksums: bool = False
) -> AllocationMap:
    table = read_partition_table(reader, name=name)
    return allocation_map(
        reader, table, bmap_path=bmap_path, verify_bmap_checksums=verify_checksums
    )


def run_flash(
    job: FlashJob,
    provider: ImageProvider,
    *,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    confirm: ConfirmWarnings | None = None,
    launcher: Launcher | None = None,
    drives: Sequence[Drive] | None = None,
) -> FlashReport:
    """Flash `job`; one TargetResult per target in the report (per-target failures don't raise).

    Raises before writing for invalid settings (ConfigError), unusable sources (ImageError,
    DownloadError, CatalogError) and rejected targets (DriveRejected; warnings the `confirm`
    callback declines also reject). `drives` are already-resolved targets (the GUI's list);
    otherwise `job.targets` paths are resolved here.
    """
    cancel = cancel or CancelToken()
    started = time.monotonic()
    if job.config is not None:
        validate_device_config(job.config)
    if not job.targets and not drives:
        raise ConfigError(
            "target",
            "at least one target is required",
            hint="Add '--target /dev/sdX' or '--target card.img'.",
        )
    targets = list(drives) if drives is not None else [resolve_target(t) for t in job.targets]

    resolved: ResolvedImage = provider.obtain(job.source, on_event=on_event, cancel=cancel)
    cancel.check()
    integrity = check_image(
        source_file(job.source, resolved),
        resolved.raw_path,
        job.expected_sha256,
        on_event=on_event,
        cancel=cancel,
    )
    config = job.config
    if config is None and job.config_from_image is not None:
        config = job.config_from_image(read_image_identity(resolved.raw_path))
    on_event(PhaseChanged(Phase.CONFIGURING))
    prepared: PreparedImage | None = None
    base = FileReader(resolved.raw_path)
    try:
        if config is not None:
            prepared = prepare_image(resolved.raw_path, config, base=base)
            amap = prepared.allocation_map()
        else:
            # A .bmap's checksums prove a source that cannot prove itself.
            bmap_proves = job.bmap_path is not None and not integrity.checked
            amap = _plain_map(
                base, str(resolved.raw_path), job.bmap_path, verify_checksums=bmap_proves
            )
            if bmap_proves and job.bmap_path is not None and bmap_checksummed(job.bmap_path):
                integrity = replace(integrity, bmap_checked=True)
        size = base.size
        on_event(PhaseChanged(Phase.CHECKING))
        warnings = check_targets(
            targets, size, resolved.raw_path, allow_internal=job.allow_internal
        )
        if warnings and not (confirm is not None and confirm(warnings)):
            raise DriveRejected(
                "Flashing needs your confirmation: " + " ".join(w.message for w in warnings),
                hint="Re-run with --yes to accept these warnings.",
                problems=[w.to_dict() for w in warnings],
            )
        for w in warnings:
            on_event(Log("warning", w.message, target=w.target))
        overlay = tuple(prepared.overlay.extents()) if prepared is not None else ()
        feed = ImageFeed.from_file(resolved.raw_path, overlay=overlay)
        results = write_image(
            feed,
            targets,
            ranges=None if job.write_all else amap.ranges,
            verify=job.verify,
            write_all=job.write_all,
            on_event=on_event,
            cancel=cancel,
            launcher=launcher,
            allow_internal=job.allow_internal,
        )
    finally:
        if prepared is not None:
            prepared.close()
        base.close()
    on_event(PhaseChanged(Phase.DONE if all(r.ok for r in results) else Phase.FAILED))
    return FlashReport(
        image_path=str(resolved.raw_path),
        size_bytes=size,
        mapped_bytes=size if job.write_all else amap.mapped_bytes,
        image_sha256=resolved.sha256,
        config_sha256=prepared.config_sha256 if prepared is not None else None,
        device_type=(prepared.device_type if prepared is not None else resolved.device_type),
        os_version=(prepared.os_version if prepared is not None else resolved.os_version),
        results=tuple(results),
        warnings=tuple(warnings),
        seconds=time.monotonic() - started,
        details=resolved.details,
        integrity=integrity,
    )
