"""What a flash looks like while it runs: per-target and shared status built from core events,
the job's state machine, and the words and numbers the Progress page shows.

Pure Python (no Qt), so the rules are tested without a window. Imports flasher.events,
flasher.errors, the writer's TargetResult value and the GUI's wording table only.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from flasher.errors import Cancelled, FlasherError
from flasher.events import Event, Log, Phase, PhaseChanged, Progress
from flasher.gui.wording import desktop_hint, desktop_message
from flasher.writer.client import TargetResult

SHARED_PHASES = (
    Phase.RESOLVING,
    Phase.DOWNLOADING,
    Phase.UNPACKING,
    Phase.CONFIGURING,
    Phase.CHECKING,
)

PHASE_WORDS: dict[Phase, str] = {
    Phase.RESOLVING: "Finding the image",
    Phase.DOWNLOADING: "Downloading",
    Phase.UNPACKING: "Unpacking",
    Phase.CONFIGURING: "Configuring",
    Phase.CHECKING: "Checking the drives",
    Phase.WRITING: "Writing",
    Phase.SYNCING: "Flushing the drive's cache",
    Phase.VERIFYING: "Verifying",
    Phase.DONE: "Done",
    Phase.FAILED: "Failed",
}


class FlashState(enum.StrEnum):
    """idle → preparing → writing → verifying → done | failed | cancelled."""

    IDLE = "idle"
    PREPARING = "preparing"
    WRITING = "writing"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (FlashState.DONE, FlashState.FAILED, FlashState.CANCELLED)


@dataclass
class TargetStatus:
    """One card (or file) as the Progress page shows it."""

    path: str
    label: str
    phase: Phase | None = None  # None: waiting for the shared steps
    done_bytes: int = 0
    total_bytes: int | None = None
    speed_bps: float | None = None
    eta_s: float | None = None
    result: TargetResult | None = None
    notes: list[str] = field(default_factory=list)
    is_file: bool = False

    @property
    def fraction(self) -> float | None:
        if self.result is not None:
            return 1.0 if self.result.ok else None
        if not self.total_bytes:
            return None
        return min(1.0, self.done_bytes / self.total_bytes)

    @property
    def failed(self) -> bool:
        return self.result is not None and not self.result.ok


WRITE_PHASES = (Phase.WRITING, Phase.SYNCING)
MEASURABLE_S = 0.2  # a shorter write has no honest average speed


@dataclass
class JobProgress:
    """Applies core events in order; `apply` tells which target changed (None: shared)."""

    targets: dict[str, TargetStatus]
    shared_phase: Phase | None = None
    shared_progress: Progress | None = None
    log: list[str] = field(default_factory=list)
    state: FlashState = FlashState.PREPARING
    job_error: FlasherError | BaseException | None = None
    started_s: float = field(default_factory=time.monotonic)
    ended_s: float | None = None
    # Bytes written by all targets together, and the wall-clock span of the writing (first
    # write to the last write's end): the average is over that span only, not over downloads,
    # preparation or read-back.
    written_bytes: int = 0
    write_started_s: float | None = None
    write_ended_s: float | None = None

    @classmethod
    def start(cls, targets: Sequence[tuple[str, str, bool]]) -> JobProgress:
        return cls(
            {path: TargetStatus(path, label, is_file=is_file) for path, label, is_file in targets},
            started_s=time.monotonic(),
        )

    def apply(self, event: Event) -> str | None:
        target = self.targets.get(event.target) if event.target is not None else None
        if isinstance(event, Log):
            where = f"{event.target}: " if event.target else ""
            self.log.append(f"[{event.level}] {where}{event.message}")
            if target is not None and event.level in ("warning", "error"):
                target.notes.append(event.message)
            return event.target if target is not None else None
        if isinstance(event, PhaseChanged):
            self.log.append(f"[phase] {event.target or 'job'}: {event.phase.value}")
            if target is None:
                if event.phase in SHARED_PHASES:
                    self.shared_phase = event.phase
                    self.shared_progress = None
                self._update_state()
                return None
            if event.phase is Phase.WRITING and self.write_started_s is None:
                self.write_started_s = time.monotonic()
            if target.phase in WRITE_PHASES and event.phase not in WRITE_PHASES:
                self.write_ended_s = time.monotonic()
            target.phase = event.phase
            target.speed_bps = target.eta_s = None
            if event.phase is Phase.DONE:
                # Finished writing and checking; its numbers come with the job's report.
                target.total_bytes = target.total_bytes or 1
                target.done_bytes = target.total_bytes
            elif event.phase is not Phase.FAILED:
                target.done_bytes, target.total_bytes = 0, None
        else:
            if target is None:
                self.shared_progress = event
                return None
            if event.phase is Phase.WRITING:
                now = time.monotonic()
                if target.phase is event.phase and event.done_bytes > target.done_bytes:
                    self.written_bytes += event.done_bytes - target.done_bytes
                elif target.phase is not event.phase:
                    self.written_bytes += event.done_bytes
                if self.write_started_s is None:
                    self.write_started_s = now
                self.write_ended_s = now
            target.phase = event.phase
            target.done_bytes, target.total_bytes = event.done_bytes, event.total_bytes
            target.speed_bps, target.eta_s = event.speed_bps, event.eta_s
        self._update_state()
        return target.path

    def _update_state(self) -> None:
        if self.state.finished:
            return
        phases = {t.phase for t in self.targets.values() if t.result is None}
        if phases & {Phase.WRITING, Phase.SYNCING}:
            self.state = FlashState.WRITING
        elif Phase.VERIFYING in phases:
            self.state = FlashState.VERIFYING
        elif phases <= {None}:
            self.state = FlashState.PREPARING

    def finish(self, results: Sequence[TargetResult], *, cancelled: bool) -> None:
        self.ended_s = time.monotonic()
        # The results say how much each card got (the last progress event may come before it).
        written = sum(r.bytes_written for r in results if r.target in self.targets)
        self.written_bytes = max(self.written_bytes, written)
        for result in results:
            status = self.targets.get(result.target)
            if status is not None:
                status.result = result
                status.phase = Phase.DONE if result.ok else Phase.FAILED
        ok = all(t.result is not None and t.result.ok for t in self.targets.values())
        errors = [t.result.error for t in self.targets.values() if t.result and not t.result.ok]
        if ok:
            self.state = FlashState.DONE
        elif cancelled or all(isinstance(e, Cancelled) for e in errors):
            self.state = FlashState.CANCELLED
        else:
            self.state = FlashState.FAILED

    def fail(self, error: BaseException, *, cancelled: bool) -> None:
        """The job ended before any target finished (bad source, rejected drive, cancel)."""
        self.ended_s = time.monotonic()
        self.job_error = error
        for status in self.targets.values():
            if status.result is None:
                status.result = TargetResult(
                    status.path,
                    False,
                    error=error if isinstance(error, FlasherError) else None,
                )
                status.phase = Phase.FAILED
        cancelled = cancelled or isinstance(error, Cancelled)
        self.state = FlashState.CANCELLED if cancelled else FlashState.FAILED

    def retry(self, paths: Sequence[str]) -> None:
        """Start over for `paths` (the failed ones); finished targets keep their results."""
        for path in paths:
            old = self.targets[path]
            self.targets[path] = TargetStatus(path, old.label, is_file=old.is_file)
        self.shared_phase = None
        self.shared_progress = None
        self.job_error = None
        self.state = FlashState.PREPARING
        self.started_s, self.ended_s = time.monotonic(), None
        self.written_bytes, self.write_started_s, self.write_ended_s = 0, None, None

    @property
    def failed_targets(self) -> list[str]:
        return [t.path for t in self.targets.values() if t.failed]

    @property
    def fraction(self) -> float:
        """All targets together: each counts its write and, when verified, its read-back."""
        total = 0.0
        for status in self.targets.values():
            if status.result is not None or status.phase is Phase.DONE:
                total += 1.0
            elif status.phase is Phase.VERIFYING:
                total += 0.5 + 0.5 * (status.fraction or 0.0)
            elif status.phase in (Phase.WRITING, Phase.SYNCING):
                total += 0.5 * (status.fraction or 0.0)
        return total / len(self.targets) if self.targets else 0.0

    @property
    def elapsed_s(self) -> float:
        """The whole job so far: preparation, writing and verification."""
        return (self.ended_s or time.monotonic()) - self.started_s

    @property
    def flash_s(self) -> float | None:
        """The flash itself: from the first write to the end (read-back included), without
        the download and preparation before it."""
        if self.write_started_s is None:
            return None
        return (self.ended_s or time.monotonic()) - self.write_started_s

    @property
    def average_speed_bps(self) -> float | None:
        """Bytes written by all cards together per second of writing; None while writing has
        not lasted long enough to say."""
        if self.write_started_s is None or self.write_ended_s is None:
            return None
        seconds = self.write_ended_s - self.write_started_s
        return self.written_bytes / seconds if seconds >= MEASURABLE_S else None


def count_words(drives: int, files: int) -> str:
    """ "1 drive", "2 drives and 1 file": a file is not called a drive."""
    parts = [
        f"{number} {noun}" if number == 1 else f"{number} {noun}s"
        for number, noun in ((drives, "drive"), (files, "file"))
        if number
    ]
    return " and ".join(parts) or "no targets"


def job_count_words(job: JobProgress) -> str:
    files = sum(1 for t in job.targets.values() if t.is_file)
    return count_words(len(job.targets) - files, files)


def overall_line(job: JobProgress) -> str:
    """Running: "45% · 28.1 MB/s writing average · elapsed: 1 min 05 s". Finished: "50.0 MB
    written at 28.1 MB/s average · flashed in 4 s (after 12 s preparing the image)" — the speed over
    the writing only, the time of the flash itself."""
    speed = job.average_speed_bps
    if not job.state.finished:
        parts = [f"{job.fraction:.0%}"]
        if speed:
            parts.append(f"{human_speed(speed)} writing average")
        parts.append(f"elapsed: {human_duration(job.elapsed_s)}")
        return " · ".join(parts)
    flash_s = job.flash_s
    if flash_s is None:
        return f"ended after {human_duration(job.elapsed_s)}"
    written = f"{human_bytes(job.written_bytes)} written"
    if speed:
        written += f" at {human_speed(speed)} average"
    took = f"flashed in {human_duration(flash_s)}"
    preparation_s = job.elapsed_s - flash_s
    if preparation_s >= 1.0:
        took += f" (after {human_duration(preparation_s)} preparing the image)"
    return f"{written} · {took}"


def human_bytes(size_bytes: float) -> str:
    """Decimal units, as drive makers and the other flashers count: 31.9 GB, 512 MB."""
    value = float(size_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_speed(speed_bps: float | None) -> str:
    return "" if not speed_bps else f"{human_bytes(speed_bps)}/s"


def human_duration(seconds: float | None) -> str:
    """ "under 1 s", "45 s", "3 min 05 s", "1 h 02 min"; empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 0.5:  # a flash from the cache to a fast card: "0 s" reads as nothing done
        return "under 1 s"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def status_line(status: TargetStatus) -> str:
    """ "Writing · 45% · 21.3 MB/s · 1 min 10 s left" — or the result in plain words."""
    result = status.result
    if result is not None:
        if result.ok:
            verified = "verified" if result.verified else "not verified"
            return (
                f"Done · {human_bytes(result.bytes_written)} written in "
                f"{human_duration(result.seconds)} · {verified}"
            )
        if isinstance(result.error, Cancelled):
            return "Cancelled"
        return "Failed"
    if status.phase is None:
        return "Waiting"
    parts = [PHASE_WORDS.get(status.phase, status.phase.value)]
    fraction = status.fraction
    if fraction is not None:
        parts.append(f"{fraction:.0%}")
    if status.speed_bps:
        parts.append(human_speed(status.speed_bps))
    if (
        status.eta_s is not None
        and status.eta_s >= 1
        and status.phase in (Phase.WRITING, Phase.VERIFYING)
    ):
        parts.append(f"{human_duration(status.eta_s)} left")
    return " · ".join(parts)


def transfer_line(progress: Progress) -> str:
    """ "Downloading · 12.0 MB of 40.0 MB · 3.1 MB/s · 10 s left"."""
    parts = [PHASE_WORDS.get(progress.phase, progress.phase.value)]
    if progress.total_bytes:
        parts.append(f"{human_bytes(progress.done_bytes)} of {human_bytes(progress.total_bytes)}")
    else:
        parts.append(human_bytes(progress.done_bytes))
    if progress.speed_bps:
        parts.append(human_speed(progress.speed_bps))
    if progress.eta_s is not None:
        parts.append(f"{human_duration(progress.eta_s)} left")
    return " · ".join(parts)


def shared_line(job: JobProgress) -> str:
    if job.shared_phase is None:
        return "Starting"
    progress = job.shared_progress
    if progress is not None and progress.phase is job.shared_phase:
        return transfer_line(progress)
    return PHASE_WORDS.get(job.shared_phase, job.shared_phase.value)


def error_words(
    error: BaseException | None, *, from_url: bool = False, cache_dir: str | None = None
) -> tuple[str, str | None]:
    """The headline and next step for an error, in desktop words (no command-line options, no
    cache paths, a hint about the URL when the source is one); an unexpected error is called
    what it is."""
    if error is None:
        return "The write did not finish.", None
    if isinstance(error, FlasherError):
        return desktop_message(error.message, cache_dir), desktop_hint(error, from_url=from_url)
    return (
        f"Flasher hit an internal error ({type(error).__name__}).",
        "Copy the details and report them; the card may be incomplete.",
    )
