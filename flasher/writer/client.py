"""The unprivileged side of the writer: start the helper, send it the image, follow its events.

`write_image()` is the API the pipeline uses: block-device targets go to the privileged helper
(pkexec, or directly when root); regular-file targets are written by this process with the same
engine. Events arrive as flasher.events values with `target` set; the result is one
TargetResult per target, in order. Never prints; imports no Qt and no network code.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
from collections.abc import Sequence
from typing import BinaryIO

from flasher.error_codes import Action
from flasher.errors import (
    Cancelled,
    FlasherError,
    ImageError,
    WriterError,
    WriterProtocolError,
)
from flasher.events import (
    CancelToken,
    Event,
    EventCallback,
    Log,
    Phase,
    PhaseChanged,
    RateMeter,
    ignore_event,
)
from flasher.models import Drive
from flasher.writer.blockdev import open_regular_file
from flasher.writer.framing import LineReader, send_request
from flasher.writer.ioerrors import io_error
from flasher.writer.job import (
    ImageFeed,
    TargetResult,
    overlay_memfd,
    stream_readinto,
)
from flasher.writer.launchers import Launcher, await_hello, default_launcher, start_helper
from flasher.writer.plan import WritePlan
from flasher.writer.protocol import (
    DEFAULT_CHUNK_BYTES,
    MAX_EVENT_BYTES,
    ImageSpec,
    JobEnd,
    LogEvent,
    Op,
    PhaseEvent,
    ProgressEvent,
    SourceKind,
    TargetDone,
    TargetError,
    TargetSpec,
    WriteOptions,
    WriteRequest,
    decode_event,
)
from flasher.writer.pumps import PIPE_BYTES, GrowthPump, StreamPump

__all__ = [
    "ImageFeed",
    "TargetResult",
    "WriterClient",
    "verify_image",
    "write_file_targets",
    "write_image",
]

DEFAULT_OPTIONS = WriteOptions()


class WriterClient:
    """Runs one job through a helper started by `launcher` and collects per-target results."""

    def __init__(self, launcher: Launcher | None = None) -> None:
        self.launcher = launcher or default_launcher()

    def write(
        self,
        image: ImageFeed,
        targets: Sequence[Drive],
        *,
        ranges: Sequence[tuple[int, int]] | None = None,
        options: WriteOptions = DEFAULT_OPTIONS,
        on_event: EventCallback = ignore_event,
        cancel: CancelToken | None = None,
        op: Op = Op.WRITE,
        allow_internal: bool = False,
        scrub: Sequence[tuple[int, int]] = (),
    ) -> list[TargetResult]:
        """Run one job (write, or with `op=Op.VERIFY` only read back and compare); `scrub`:
        the map's journal areas to scan instead of write (flasher.writer.scrub).

        `allow_internal` marks the internal disks among `targets` as confirmed on their own;
        without it the helper refuses them."""
        cancel = cancel or CancelToken()
        request = WriteRequest(
            op=op,
            targets=tuple(
                TargetSpec(d.path, d.dev, d.size_bytes, d.serial, allow_internal=allow_internal)
                for d in targets
            ),
            image=ImageSpec(
                image.size_bytes,
                _source_kind(image),
                image.sha256 if image.path is None else None,
            ),
            ranges=None if ranges is None else tuple(ranges),
            overlay=image.overlay_ranges,
            options=options,
            scrub=tuple(scrub),
        )
        fds: list[int] = []
        pump: StreamPump | GrowthPump | None = None
        try:
            if image.path is not None:
                fds.append(os.open(image.path, os.O_RDONLY | os.O_CLOEXEC))
            else:
                assert image.open_stream is not None
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
                fds.append(read_end)
                with contextlib.suppress(OSError):
                    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
                pump = StreamPump(image.open_stream, image.size_bytes, write_end, cancel)
            if request.overlay:
                fds.append(overlay_memfd(image))
            if image.growth is not None:
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
                fds.append(read_end)
                pump = GrowthPump(image.growth, write_end, cancel)
        except BaseException:
            _release(fds, pump)
            raise
        return _Session(self.launcher, request, on_event, cancel).run(fds, pump)


def _source_kind(image: ImageFeed) -> SourceKind:
    if image.growth is not None:
        return SourceKind.FOLLOW
    return SourceKind.FD if image.path is not None else SourceKind.STREAM


def _close_fds(fds: list[int]) -> None:
    while fds:
        with contextlib.suppress(OSError):
            os.close(fds.pop())


def _release(fds: list[int], pump: StreamPump | GrowthPump | None) -> None:
    """Give back what a job holds when it fails before the helper has taken it over."""
    _close_fds(fds)
    if pump is not None:
        pump.close()


class _Session:
    def __init__(
        self,
        launcher: Launcher,
        request: WriteRequest,
        on_event: EventCallback,
        cancel: CancelToken,
    ) -> None:
        self.launcher = launcher
        self.request = request
        self.on_event = on_event
        self.cancel = cancel
        self.results: dict[str, TargetResult] = {}
        self.meters: dict[tuple[str, Phase], RateMeter] = {}
        self.job_error: FlasherError | None = None

    def run(self, fds: list[int], pump: StreamPump | GrowthPump | None) -> list[TargetResult]:
        """Run the job; takes ownership of `fds` (closed once the helper holds copies)."""
        try:
            ours, handle = start_helper(self.launcher)
        except BaseException:
            _release(fds, pump)
            raise
        self.cancel.on_cancel(lambda: _shutdown_send(ours))
        reader = LineReader(ours)
        try:
            await_hello(reader, ours, handle)
            if not self.cancel.cancelled:
                send_request(ours, self.request, fds)
                # The helper has its own copies now; ours would keep the stream pipe open.
                _close_fds(fds)
                if pump is not None:
                    pump.start()
            while (line := reader.read_line(MAX_EVENT_BYTES)) is not None:
                if self._dispatch(decode_event(line)):
                    break
        except BrokenPipeError:
            pass  # the helper went away; its exit code explains below
        finally:
            _close_fds(fds)
            ours.close()
            code = handle.wait()
            if pump is not None:
                if pump.ident is not None:
                    pump.join()
                pump.close()
        return self._collect(code, handle.diagnostics(), pump)

    def _dispatch(self, event: object) -> bool:
        if isinstance(event, ProgressEvent):
            key = (event.target, event.phase)
            meter = self.meters.get(key)
            if meter is None:
                meter = self.meters[key] = RateMeter(
                    event.phase, event.total_bytes, target=event.target
                )
            progress = meter.update(event.done_bytes, force=True)
            if progress is not None:
                self.on_event(progress)
        elif isinstance(event, PhaseEvent):
            self.on_event(PhaseChanged(event.phase, event.target))
        elif isinstance(event, LogEvent):
            self.on_event(Log(event.level, event.message, event.target))
        elif isinstance(event, TargetDone):
            self.results[event.target] = TargetResult(
                event.target,
                True,
                event.bytes_written,
                event.seconds,
                event.verified,
                event.sha256,
                scanned_bytes=event.scanned_bytes,
                zeroed_blocks=event.zeroed_blocks,
            )
            self.on_event(PhaseChanged(Phase.DONE, event.target))
        elif isinstance(event, TargetError):
            self.results[event.target] = TargetResult(event.target, False, error=event.error)
            self.on_event(PhaseChanged(Phase.FAILED, event.target))
        elif isinstance(event, JobEnd):
            self.job_error = event.error
            return True
        else:
            raise WriterProtocolError("Writer protocol: a second hello in one job.")
        return False

    def _collect(
        self, code: int, stderr: str, pump: StreamPump | GrowthPump | None
    ) -> list[TargetResult]:
        if self.job_error is not None and not self.results:
            raise self.job_error
        out: list[TargetResult] = []
        for spec in self.request.targets:
            result = self.results.get(spec.path)
            if result is None:
                if self.cancel.cancelled:
                    error: FlasherError = Cancelled()
                else:
                    error = self.job_error or WriterError(
                        f"The writer helper ended without a result for {spec.path} "
                        f"(exit code {code}).",
                        action=Action.SHOW_DETAILS,
                        target=spec.path,
                        stderr=stderr,
                    )
                result = TargetResult(spec.path, False, error=error)
            elif pump is not None and isinstance(result.error, ImageError):
                # The helper only saw the stream end early; the pump knows why.
                if pump.error is not None:
                    result = TargetResult(spec.path, False, error=pump.error)
                elif self.cancel.cancelled:
                    result = TargetResult(spec.path, False, error=Cancelled())
            out.append(result)
        return out


def _shutdown_send(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def _serialized(on_event: EventCallback) -> EventCallback:
    lock = threading.Lock()

    def emit(event: Event) -> None:
        with lock:
            on_event(event)

    return emit


def write_file_targets(
    image: ImageFeed,
    paths: Sequence[str],
    *,
    ranges: Sequence[tuple[int, int]] | None = None,
    options: WriteOptions = DEFAULT_OPTIONS,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    scrub: Sequence[tuple[int, int]] = (),
) -> list[TargetResult]:
    """Write regular-file targets in this process (no helper, no root), same engine and order."""
    # The engine runs here for files only; a flash of drives hands the job to the helper.
    from flasher.writer import follow, targets
    from flasher.writer.growing import FollowSource
    from flasher.writer.imagesource import (
        ImageSourceLike,
        Overlay,
        RandomAccessSource,
        StreamSource,
    )

    cancel = cancel or CancelToken()
    emit = _serialized(on_event)
    opened = []
    results: dict[str, TargetResult] = {}
    for path in paths:
        try:
            opened.append(open_regular_file(path, size_bytes=image.size_bytes, create=True))
        except FlasherError as err:
            results[path] = TargetResult(path, False, error=err)
        except OSError as err:
            results[path] = TargetResult(path, False, error=io_error(err, path, "creating"))
    overlay = Overlay(image.overlay)
    stream: BinaryIO | None = None
    fd = -1
    try:
        source: ImageSourceLike
        if image.path is not None and image.growth is not None:
            fd = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC)
            source = FollowSource(fd, image.growth, overlay)
        elif image.path is not None:
            fd = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC)
            source = RandomAccessSource(fd, image.size_bytes, overlay)
        else:
            assert image.open_stream is not None
            stream = image.open_stream()
            source = StreamSource(
                stream_readinto(stream), image.size_bytes, overlay, expected_sha256=image.sha256
            )
        if isinstance(source, FollowSource):
            outcomes = follow.follow_targets(
                source,
                opened,
                chunk_bytes=options.chunk_bytes,
                verify=options.verify,
                on_event=emit,
                cancel=cancel,
            )
        else:
            plan = WritePlan.build(
                image.size_bytes,
                ranges,
                chunk_bytes=options.chunk_bytes,
                write_all=options.write_all,
                overlay_ranges=image.overlay_ranges,
            )
            outcomes = targets.write_targets(
                source,
                plan,
                opened,
                verify=options.verify,
                on_event=emit,
                cancel=cancel,
                scrub=() if ranges is None or options.write_all else scrub,
            )
        for outcome in outcomes:
            results[outcome.path] = TargetResult(
                outcome.path,
                outcome.ok,
                outcome.bytes_written,
                outcome.seconds,
                outcome.verified,
                outcome.sha256,
                outcome.error,
                outcome.scanned_bytes,
                outcome.zeroed_blocks,
            )
            emit(PhaseChanged(Phase.DONE if outcome.ok else Phase.FAILED, outcome.path))
    finally:
        for target in opened:
            target.close()
        if fd >= 0:
            os.close(fd)
        if stream is not None:
            stream.close()
    return [results[p] for p in paths]


def write_image(
    image: ImageFeed,
    targets: Sequence[Drive],
    *,
    ranges: Sequence[tuple[int, int]] | None = None,
    verify: bool = True,
    write_all: bool = False,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    launcher: Launcher | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    allow_internal: bool = False,
    scrub: Sequence[tuple[int, int]] = (),
) -> list[TargetResult]:
    """Write `image` to every target at once; one TargetResult per target, in order.

    Drives with `is_file` are written by this process; the others by the privileged helper
    started by `launcher` (default: directly when root, else pkexec). `ranges` is the allocation
    map (None: the whole image), `scrub` its scrub ranges. Internal disks are written only with
    `allow_internal`. Raises only for job-level failures (permission refused, helper missing or
    incompatible); per-target failures are in the results. `on_event` is called from
    one thread at a time, though not always the caller's.
    """
    cancel = cancel or CancelToken()
    emit = _serialized(on_event)
    options = WriteOptions(verify=verify, write_all=write_all, chunk_bytes=chunk_bytes)
    files = [d.path for d in targets if d.is_file]
    devices = [d for d in targets if not d.is_file]
    results: dict[str, TargetResult] = {}
    file_error: list[BaseException] = []

    def write_files() -> None:
        try:
            for r in write_file_targets(
                image,
                files,
                ranges=ranges,
                options=options,
                on_event=emit,
                cancel=cancel,
                scrub=scrub,
            ):
                results[r.target] = r
        except BaseException as err:  # re-raised on the caller's thread
            file_error.append(err)

    file_thread = threading.Thread(target=write_files, name="flasher-files", daemon=True)
    if files:
        file_thread.start()
    try:
        if devices:
            client = WriterClient(launcher)
            for r in client.write(
                image,
                devices,
                ranges=ranges,
                options=options,
                on_event=emit,
                cancel=cancel,
                allow_internal=allow_internal,
                scrub=() if ranges is None or write_all else scrub,
            ):
                results[r.target] = r
    except BaseException:
        cancel.cancel()
        raise
    finally:
        if files:
            file_thread.join()
    if file_error:
        raise file_error[0]
    return [results[d.path] for d in targets]


def verify_image(
    image: ImageFeed,
    targets: Sequence[Drive],
    *,
    ranges: Sequence[tuple[int, int]] | None = None,
    write_all: bool = False,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    launcher: Launcher | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> list[TargetResult]:
    """Read drives back through the helper and compare them with `image`, writing nothing.

    For re-checking cards written earlier with the same image, ranges and chunk size (the
    digests then match the write's). `image` must be a file; targets are block devices.
    """
    if image.path is None:
        raise ValueError("verifying needs the image as a file, not a stream")
    options = WriteOptions(verify=True, write_all=write_all, chunk_bytes=chunk_bytes)
    return WriterClient(launcher).write(
        image,
        targets,
        ranges=ranges,
        options=options,
        on_event=_serialized(on_event),
        cancel=cancel,
        op=Op.VERIFY,
    )
