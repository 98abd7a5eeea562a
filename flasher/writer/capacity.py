"""Probing a drive's real capacity from the unprivileged side: through the writer helper for
block devices (it opens and checks them as for a write), in this process for regular files.

`probe_drive()` returns the helper's CapacityReport; `check_capacity()` raises CounterfeitCard
when the card holds less than it claims. Never prints; imports no Qt and no network code.
"""

from __future__ import annotations

import contextlib
import socket
import stat
from os import stat as os_stat

from flasher.error_codes import Action
from flasher.errors import Cancelled, CounterfeitCard, FlasherError, WriterError
from flasher.events import CancelToken, EventCallback, Log, Phase, RateMeter, ignore_event
from flasher.models import Drive
from flasher.writer.blockdev import open_regular_file
from flasher.writer.framing import LineReader
from flasher.writer.launchers import (
    Launcher,
    authorization_denied,
    default_launcher,
    start_helper,
)
from flasher.writer.probe import DEFAULT_POSITIONS, CapacityReport, FdSectorIO, probe_capacity
from flasher.writer.probe_service import (
    ProbeRequest,
    ProbeResult,
    decode_probe_event,
    encode_probe_request,
)
from flasher.writer.protocol import (
    MAX_EVENT_BYTES,
    Hello,
    JobEnd,
    LogEvent,
    ProgressEvent,
    TargetError,
    TargetSpec,
)


def _is_regular_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os_stat(path).st_mode)
    except OSError:
        return False


def probe_drive(
    drive: Drive,
    *,
    positions: int = DEFAULT_POSITIONS,
    restore: bool = True,
    launcher: Launcher | None = None,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> CapacityReport:
    """Probe one drive (see flasher.writer.probe); raises when it cannot be probed."""
    cancel = cancel or CancelToken()
    if launcher is None and _is_regular_file(drive.path):
        io = FdSectorIO(open_regular_file(drive.path))
        try:
            return probe_capacity(io, positions=positions, restore=restore, cancel=cancel)
        finally:
            io.close()
    request = ProbeRequest(
        (TargetSpec(drive.path, drive.dev, drive.size_bytes, drive.serial),), positions, restore
    )
    return _Probe(launcher or default_launcher(), request, on_event, cancel).run()


class _Probe:
    def __init__(
        self,
        launcher: Launcher,
        request: ProbeRequest,
        on_event: EventCallback,
        cancel: CancelToken,
    ) -> None:
        self.launcher = launcher
        self.request = request
        self.on_event = on_event
        self.cancel = cancel
        self.meter: RateMeter | None = None
        self.report: CapacityReport | None = None
        self.error: FlasherError | None = None

    def run(self) -> CapacityReport:
        ours, handle = start_helper(self.launcher)
        self.cancel.on_cancel(lambda: _shutdown(ours))
        reader = LineReader(ours)
        try:
            first = reader.read_line(MAX_EVENT_BYTES)
            if first is not None and isinstance(decode_probe_event(first), Hello):
                ours.sendall(encode_probe_request(self.request))
                while (line := reader.read_line(MAX_EVENT_BYTES)) is not None:
                    if self._dispatch(decode_probe_event(line)):
                        break
        except BrokenPipeError:
            pass
        finally:
            ours.close()
            code = handle.wait()
        if self.report is not None:
            return self.report
        if self.error is not None:
            raise self.error
        if self.cancel.cancelled:
            raise Cancelled("The capacity probe was cancelled.")
        raise authorization_denied(code) or WriterError(
            f"The writer helper ended without probing the card (exit code {code}).",
            action=Action.SHOW_DETAILS,
            stderr=handle.diagnostics(),
        )

    def _dispatch(self, event: object) -> bool:
        if isinstance(event, ProgressEvent):
            if self.meter is None:
                self.meter = RateMeter(Phase.CHECKING, event.total_bytes, target=event.target)
            progress = self.meter.update(event.done_bytes, force=True)
            if progress is not None:
                self.on_event(progress)
        elif isinstance(event, LogEvent):
            self.on_event(Log(event.level, event.message, event.target))
        elif isinstance(event, ProbeResult):
            self.report = event.report
        elif isinstance(event, TargetError):
            self.error = event.error
        elif isinstance(event, JobEnd):
            self.error = self.error or event.error
            return True
        return False


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def _size(size_bytes: int) -> str:
    """ "8.00 GB", or "67.1 MB" below a gigabyte (where "0.07 GB" would say little)."""
    if size_bytes < 10**9:
        return f"{size_bytes / 1e6:.1f} MB"
    return f"{size_bytes / 1e9:.2f} GB"


def counterfeit_error(drive: Drive, report: CapacityReport) -> CounterfeitCard:
    claimed_gb = report.advertised_bytes / 1e9
    how = "writes past it wrap around" if report.wrapped else "writes past it are lost"
    return CounterfeitCard(
        f"{drive.path} claims {claimed_gb:.1f} GB but holds only {_size(report.real_bytes)} "
        f"({how}).",
        hint="The card is counterfeit or failing; do not use it.",
        target=drive.path,
        advertised_bytes=report.advertised_bytes,
        real_bytes=report.real_bytes,
    )


def check_capacity(
    drive: Drive,
    *,
    positions: int = DEFAULT_POSITIONS,
    restore: bool = True,
    launcher: Launcher | None = None,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> CapacityReport:
    """Probe the drive; CounterfeitCard when it holds less than it claims."""
    report = probe_drive(
        drive,
        positions=positions,
        restore=restore,
        launcher=launcher,
        on_event=on_event,
        cancel=cancel,
    )
    if not report.ok:
        raise counterfeit_error(drive, report)
    return report
