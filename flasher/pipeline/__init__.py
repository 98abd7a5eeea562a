"""One flash job for N targets: prepare once, then write: the path every face shares.

    prepare (flasher.pipeline.prepare): resolve → download → unpack → configure → map, once
    write   (flasher.pipeline.write):   check → confirm → write → verify, per target or card

`run_flash` composes the two for the CLI's `flash`; the desktop app composes the same parts
(`prepare_flash`, `write_flash`, `finish_flash`) to check each drive once the image's size is
known; the bench station prepares once and writes each card as it arrives (`PreparedJob.card`
derives a card's own configuration). Steps 2–4 are cached, so the second card of a batch starts
at the check. Synchronous; events go to `on_event`; cancellation through a CancelToken. Never
prints; imports no Qt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flasher.drives.constraints import Problem
from flasher.drives.early import EarlyDrives
from flasher.events import CancelToken, EventCallback, Phase, PhaseChanged, ignore_event
from flasher.image.earlymap import EarlyMap
from flasher.image.inspection import ImageIdentity
from flasher.image.integrity import IntegrityReport
from flasher.models import DeviceConfig, Drive
from flasher.pipeline.prepare import CardImage, PreparedJob, prepare
from flasher.pipeline.write import (
    ConfirmWarnings,
    WriteOutcome,
    accept_warnings,
    check,
    require_targets,
    resolve_target,
    write,
)
from flasher.provider import ImageProvider, SourceSpec
from flasher.writer.client import TargetResult
from flasher.writer.launchers import Launcher

__all__ = [
    "CardImage",
    "ConfirmWarnings",
    "EarlyDrives",
    "EarlyMap",
    "FlashJob",
    "FlashReport",
    "PreparedJob",
    "WriteOutcome",
    "accept_warnings",
    "check",
    "finish_flash",
    "prepare",
    "prepare_flash",
    "require_targets",
    "resolve_target",
    "run_flash",
    "write",
    "write_flash",
]


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
    integrity: IntegrityReport = field(kw_only=True)  # what proved the source's bytes
    scrub_bytes: int = field(default=0, kw_only=True)  # journal bytes scanned, not written

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def run_flash(
    job: FlashJob,
    provider: ImageProvider,
    *,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    confirm: ConfirmWarnings | None = None,
    launcher: Launcher | None = None,
    drives: Sequence[Drive] | None = None,
    early_map: EarlyMap | None = None,
    early_drives: EarlyDrives | None = None,
) -> FlashReport:
    """Flash `job`: `prepare` it, then `write` it to every target at once.

    One TargetResult per target in the report (per-target failures don't raise). Raises before
    writing for invalid settings (ConfigError), unusable sources (ImageError, DownloadError,
    CatalogError) and rejected targets (DriveRejected; warnings the `confirm` callback
    declines also reject). `drives` are already-resolved targets (the GUI's list); otherwise
    `job.targets` paths are resolved here (`early_drives`: see `resolve_target`).
    `early_map`: see `prepare`.
    """
    cancel = cancel or CancelToken()
    started = time.monotonic()
    if job.config is not None:
        from flasher.validation import validate_device_config  # loaded only to configure

        validate_device_config(job.config)
    require_targets(drives or job.targets)
    if drives is not None:
        targets = list(drives)
    else:
        targets = [resolve_target(t, early_drives) for t in job.targets]
    with prepare_flash(
        job, provider, on_event=on_event, cancel=cancel, early_map=early_map
    ) as prepared:
        outcome = write_flash(
            job,
            prepared,
            targets,
            confirm=confirm,
            launcher=launcher,
            on_event=on_event,
            cancel=cancel,
        )
    return finish_flash(prepared, outcome, started, on_event)


def prepare_flash(
    job: FlashJob,
    provider: ImageProvider,
    *,
    on_event: EventCallback,
    cancel: CancelToken,
    early_map: EarlyMap | None = None,
) -> PreparedJob:
    """`prepare` `job`'s image as its settings say, to be written once (see `prepare`)."""
    return prepare(
        job.source,
        provider,
        config=job.config,
        config_from_image=job.config_from_image,
        bmap_path=job.bmap_path,
        write_all=job.write_all,
        expected_sha256=job.expected_sha256,
        one_flash=True,
        on_event=on_event,
        cancel=cancel,
        early_map=early_map,
    )


def write_flash(
    job: FlashJob,
    prepared: PreparedJob,
    targets: Sequence[Drive],
    *,
    confirm: ConfirmWarnings | None,
    launcher: Launcher | None,
    on_event: EventCallback,
    cancel: CancelToken,
) -> WriteOutcome:
    """`write` the prepared image to `targets` as `job`'s settings say (see `write`)."""
    return write(
        prepared,
        targets,
        verify=job.verify,
        confirm=confirm,
        allow_internal=job.allow_internal,
        on_event=on_event,
        cancel=cancel,
        launcher=launcher,
    )


def finish_flash(
    prepared: PreparedJob, outcome: WriteOutcome, started: float, on_event: EventCallback
) -> FlashReport:
    """After the prepared job is closed: raise its image's error if the decode found one, say
    done or failed, and report (`started`: the job's time.monotonic() start)."""
    prepared.raise_source_error()  # the image was bad: a job failure, as when found unpacking
    on_event(PhaseChanged(Phase.DONE if outcome.ok else Phase.FAILED))
    return FlashReport(
        image_path=str(prepared.raw_path),
        size_bytes=prepared.size_bytes,
        mapped_bytes=prepared.mapped_bytes,
        scrub_bytes=prepared.scrub_bytes,
        image_sha256=prepared.sha256(),
        config_sha256=prepared.image.config_sha256,
        device_type=prepared.identity.device_type,
        os_version=prepared.identity.os_version,
        results=outcome.results,
        warnings=outcome.warnings,
        seconds=time.monotonic() - started,
        details=prepared.details,
        integrity=prepared.integrity,
    )
