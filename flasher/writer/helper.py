"""The privileged writer helper: `flasher-writer` (or `python -m flasher.writer`), run as root.

Imports only the standard library, flasher.errors, flasher.events and flasher.writer modules:
no network, no settings, no user files. It talks over its stdin, which must be one end of a
unix socketpair (see flasher.writer.protocol): it sends `hello`, reads one request with the
image fd (and overlay memfd) attached, re-checks and opens every target through the policy it
was given, runs the engine, and reports. A first line asking for a session instead makes it
serve one such job on every connection handed over that socket (flasher.writer.helper_session)
until the socket ends: one helper for a whole bench station. `main()` always uses
BlockDevicePolicy; `run()` takes the policy as an argument so tests can hand in a regular-file
policy in-process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import stat
import sys
import threading
from collections.abc import Sequence

from flasher.error_codes import ProblemCode
from flasher.errors import (
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    Cancelled,
    DriveRejected,
    FlasherError,
)
from flasher.events import CancelToken, Event, Log, PhaseChanged, Progress
from flasher.writer import engine, follow, helper_session, probe_service
from flasher.writer.blockdev import BlockDevicePolicy, OpenTarget, TargetPolicy
from flasher.writer.framing import LineReader
from flasher.writer.growing import FollowSource, Growth, feed_growth
from flasher.writer.helper_session import SharedBudget
from flasher.writer.imagesource import ImageSourceLike, Overlay, RandomAccessSource, StreamSource
from flasher.writer.ioerrors import io_error
from flasher.writer.plan import WritePlan
from flasher.writer.protocol import (
    MAX_EVENT_BYTES,
    MAX_REQUEST_BYTES,
    Hello,
    JobEnd,
    LogEvent,
    Op,
    PhaseEvent,
    ProgressEvent,
    SourceKind,
    TargetDone,
    TargetError,
    WireEvent,
    WriteRequest,
    decode_request,
    encode_event,
)
from flasher.writer.sessionwire import is_session_request
from flasher.writer.strictjson import fail
from flasher.writer.targets import verify_targets, write_targets


class _Emitter:
    """Sends events from any thread; a vanished client counts as a cancel."""

    def __init__(self, sock: socket.socket, cancel: CancelToken) -> None:
        self._sock = sock
        self._cancel = cancel
        self._lock = threading.Lock()

    def send(self, event: WireEvent) -> None:
        line = encode_event(event)
        with self._lock:
            try:
                self._sock.sendall(line)
            except OSError:
                self._cancel.cancel()

    def engine_event(self, event: Event) -> None:
        if isinstance(event, Progress):
            self.send(
                ProgressEvent(
                    event.target or "", event.phase, event.done_bytes, event.total_bytes or 0
                )
            )
        elif isinstance(event, PhaseChanged):
            self.send(PhaseEvent(event.target or "", event.phase))
        elif isinstance(event, Log):
            self.send(LogEvent(event.level, event.message, event.target))

    def outcome(self, outcome: engine.TargetOutcome) -> None:
        if outcome.ok:
            self.send(
                TargetDone(
                    outcome.path,
                    outcome.bytes_written,
                    outcome.sha256,
                    outcome.verified,
                    outcome.seconds,
                    outcome.scanned_bytes,
                    outcome.zeroed_blocks,
                )
            )
        elif outcome.error is not None:
            self.send(TargetError(outcome.path, outcome.error))


def _check_fd(fd: int, what: str, *, fifo: bool = False, read_only: bool = True) -> None:
    mode = os.fstat(fd).st_mode
    if fifo and not stat.S_ISFIFO(mode):
        fail(f"the {what} must be a pipe")
    if not fifo and not stat.S_ISREG(mode):
        fail(f"the {what} must be a regular file or memfd")
    if read_only and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY:
        fail(f"the {what} must be opened read-only")


def _open_source(request: WriteRequest, fds: Sequence[int], cancel: CancelToken) -> ImageSourceLike:
    if len(fds) != request.fd_count:
        fail(f"expected {request.fd_count} file descriptor(s) with the request, got {len(fds)}")
    overlay = Overlay()
    if request.overlay:
        _check_fd(fds[1], "overlay", read_only=False)
        overlay = Overlay.from_fd(fds[1], request.overlay)
    size = request.image.size_bytes
    if request.image.source is SourceKind.FOLLOW:
        _check_fd(fds[0], "image")
        _check_fd(fds[-1], "image growth", fifo=True)
        growth = Growth(size)
        threading.Thread(
            target=feed_growth, args=(fds[-1], growth, cancel), name="flasher-growth", daemon=True
        ).start()
        return FollowSource(fds[0], growth, overlay)
    if request.image.source is SourceKind.STREAM:
        _check_fd(fds[0], "image stream", fifo=True)
        return StreamSource.from_fd(
            fds[0], size, overlay, expected_sha256=request.image.sha256, cancel=cancel
        )
    _check_fd(fds[0], "image")
    return RandomAccessSource(fds[0], size, overlay)


def _watch_for_eof(reader: LineReader, cancel: CancelToken) -> None:
    # The client sends nothing after the request: EOF (or anything at all) means cancel.
    with contextlib.suppress(OSError, FlasherError):
        reader.read_line(MAX_EVENT_BYTES)
    cancel.cancel()


def _open_targets(
    request: WriteRequest, policy: TargetPolicy, emitter: _Emitter, cancel: CancelToken
) -> list[OpenTarget]:
    opened: list[OpenTarget] = []
    for spec in request.targets:
        if cancel.cancelled:
            emitter.send(TargetError(spec.path, Cancelled()))
            continue

        def log(message: str, path: str = spec.path) -> None:
            emitter.send(LogEvent("info", message, path))

        try:
            opened.append(policy.open_target(spec, log))
        except FlasherError as err:
            emitter.send(TargetError(spec.path, err))
        except OSError as err:
            emitter.send(TargetError(spec.path, io_error(err, spec.path, "opening")))
    return opened


def _execute(
    request: WriteRequest,
    source: ImageSourceLike,
    targets: list[OpenTarget],
    emitter: _Emitter,
    cancel: CancelToken,
    budget_targets: int,
) -> list[engine.TargetOutcome]:
    """Plan and run the job on targets already checked and opened.

    The plan is built only now, for targets that hold the whole image, so its size is bounded
    by a real device rather than by what the request claims. `budget_targets`: the targets of
    every job the helper runs now, this one's included (they share the buffer budget).
    """
    opts = request.options
    if isinstance(source, FollowSource):
        return follow.follow_targets(
            source,
            targets,
            chunk_bytes=opts.chunk_bytes,
            verify=opts.verify,
            on_event=emitter.engine_event,
            cancel=cancel,
            on_outcome=emitter.outcome,
        )
    plan = WritePlan.build(
        request.image.size_bytes,
        request.ranges,
        chunk_bytes=opts.chunk_bytes,
        write_all=opts.write_all,
        overlay_ranges=request.overlay,
    )
    if request.op is Op.VERIFY and isinstance(source, RandomAccessSource):
        return verify_targets(
            source,
            plan,
            targets,
            on_event=emitter.engine_event,
            cancel=cancel,
            on_outcome=emitter.outcome,
            budget_targets=budget_targets,
        )
    return write_targets(
        source,
        plan,
        targets,
        verify=opts.verify,
        on_event=emitter.engine_event,
        cancel=cancel,
        on_outcome=emitter.outcome,
        budget_targets=budget_targets,
        scrub=request.scrub,
    )


def _fitting(
    opened: list[OpenTarget], request: WriteRequest, emitter: _Emitter
) -> list[OpenTarget]:
    """The opened targets that can hold the image; the others are refused and closed."""
    keep: list[OpenTarget] = []
    for target in opened:
        if target.size_bytes >= request.image.size_bytes:
            keep.append(target)
            continue
        target.close()
        emitter.send(
            TargetError(
                target.path,
                DriveRejected(
                    f"{target.path} is too small: {target.size_bytes} bytes for an image of "
                    f"{request.image.size_bytes}.",
                    hint="Use a larger card.",
                    target=target.path,
                    problem=ProblemCode.TOO_SMALL,
                ),
            )
        )
    return keep


def run(
    sock: socket.socket,
    policy: TargetPolicy,
    *,
    cancel: CancelToken | None = None,
    budget: SharedBudget | None = None,
    session: bool = True,
) -> int:
    """Serve one job on `sock`; returns the exit code (0 only if every target succeeded).

    With `session`, the first line may instead open a session (flasher.writer.sessionwire):
    then every job connection attached to it is served by `run` (without `session`) on a
    thread of its own, sharing one `budget`, until `sock` ends.
    """
    cancel = cancel or CancelToken()
    budget = budget or SharedBudget()
    emitter = _Emitter(sock, cancel)
    reader = LineReader(sock, max_fds=3)
    emitter.send(Hello())
    try:
        line = reader.read_line(MAX_REQUEST_BYTES)
    except FlasherError as err:
        _close_all(reader.fds)
        emitter.send(JobEnd(False, err))
        return EXIT_USAGE
    if line is None:
        _close_all(reader.fds)
        return EXIT_CANCELLED  # the client left before asking for anything
    if session and is_session_request(line):

        def serve_job(job: socket.socket, job_cancel: CancelToken, shared: SharedBudget) -> int:
            return run(job, policy, cancel=job_cancel, budget=shared, session=False)

        return helper_session.serve_session(sock, reader, line, serve_job, cancel)
    if probe_service.is_probe_request(line):
        _close_all(reader.fds)
        return _serve_probe(sock, reader, line, policy, emitter, cancel)
    try:
        request = decode_request(line)
        source = _open_source(request, reader.fds, cancel)
    except (FlasherError, OSError) as err:
        _close_all(reader.fds)
        wrapped = err if isinstance(err, FlasherError) else io_error(err, "image", "reading")
        emitter.send(JobEnd(False, wrapped))
        return EXIT_USAGE
    watcher = threading.Thread(target=_watch_for_eof, args=(reader, cancel), daemon=True)
    watcher.start()
    targets = _fitting(_open_targets(request, policy, emitter, cancel), request, emitter)
    sharing = budget.take(len(targets))
    try:
        outcomes = _execute(request, source, targets, emitter, cancel, sharing) if targets else []
    finally:
        budget.give_back(len(targets))
        for target in targets:
            target.close()
        _close_all(reader.fds)
    ok = len(outcomes) == len(request.targets) and all(o.ok for o in outcomes)
    emitter.send(JobEnd(ok))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # also wakes the EOF watcher
    watcher.join()
    if ok:
        return EXIT_OK
    return EXIT_CANCELLED if cancel.cancelled else EXIT_ERROR


def _serve_probe(
    sock: socket.socket,
    reader: LineReader,
    line: bytes,
    policy: TargetPolicy,
    emitter: _Emitter,
    cancel: CancelToken,
) -> int:
    try:
        ok = probe_service.serve_probe(sock, reader, line, policy, cancel)
    except FlasherError as err:
        emitter.send(JobEnd(False, err))
        return EXIT_USAGE
    if ok:
        return EXIT_OK
    return EXIT_CANCELLED if cancel.cancelled else EXIT_ERROR


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _shield(cancel: CancelToken) -> None:
    """Keep a terminal from killing the helper mid-write, which would leave a half-written card
    that may boot: leave the terminal's session, ignore SIGINT and SIGHUP (the app cancels by
    closing the socket), and turn SIGTERM into a cancel, so unfinished cards are still erased.

    Called before any other thread starts. SIGTERM is blocked in every thread (they inherit the
    mask) and taken by a thread of its own: a Python signal handler runs only on the main thread,
    and when the kernel hands the signal to a writing or verifying thread instead, the main
    thread, waiting for those, would not run the handler until the job had finished."""
    with contextlib.suppress(OSError):
        os.setsid()  # fails only for a process group leader, which a child never is
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(
        target=_cancel_on_sigterm, args=(cancel,), name="flasher-sigterm", daemon=True
    ).start()


def _cancel_on_sigterm(cancel: CancelToken) -> None:
    while True:
        signal.sigwait({signal.SIGTERM})
        cancel.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: stdin must be the socket Flasher passed; there are no options."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args:
        sys.stderr.write("flasher-writer takes no arguments; Flasher starts it.\n")
        return EXIT_USAGE
    try:
        is_socket = stat.S_ISSOCK(os.fstat(0).st_mode)
    except OSError:
        is_socket = False
    if not is_socket:
        sys.stderr.write("flasher-writer: stdin must be the socket Flasher passes to it.\n")
        return EXIT_USAGE
    cancel = CancelToken()
    _shield(cancel)
    sock = socket.socket(fileno=0)
    try:
        return run(sock, BlockDevicePolicy(), cancel=cancel)
    finally:
        sock.detach()


if __name__ == "__main__":
    raise SystemExit(main())
