"""One long-lived writer helper for many jobs: a Launcher that hands each job to a session.

`SharedHelper` is what a bench station passes wherever a Launcher goes (the write of each card,
its capacity probe): the first job starts the helper through the launcher it wraps (one
authorisation for the station, not one per card) and opens a session on it
(flasher.writer.sessionwire); every job then gets a socketpair of its own whose other end is
handed to that helper, so each job keeps the one-job protocol, checks and cancel of
flasher.writer.client unchanged. If the helper dies, the jobs it was serving see their
connection end (their targets fail with the helper's exit code) and the next job starts a new
helper. `close()` ends the session; the helper cancels whatever still runs and exits.

Imports only the standard library and flasher.errors/flasher.writer modules; never prints.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading

from flasher.error_codes import Action
from flasher.errors import FlasherError, WriterError, WriterProtocolError
from flasher.writer.framing import LineReader
from flasher.writer.launchers import (
    Launcher,
    StartedHelper,
    WriterHandle,
    await_hello,
    default_launcher,
    end_started,
    start_helper,
)
from flasher.writer.protocol import MAX_EVENT_BYTES
from flasher.writer.sessionwire import (
    JobExit,
    decode_control_event,
    encode_attach,
    encode_session_start,
)


class _JobHandle:
    """A job's WriterHandle: its exit code comes from the session's `job_exit`, or is the
    helper's own exit code when the helper ended first."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._done = threading.Event()
        self._code = 1

    def finish(self, code: int) -> None:
        if not self._done.is_set():
            self._code = code
            self._done.set()

    def wait(self) -> int:
        self._done.wait()
        return self._code

    def diagnostics(self) -> str:
        return self._session.diagnostics()


class _Session:
    """One helper process and its control connection."""

    def __init__(self, launcher: Launcher, started: StartedHelper | None = None) -> None:
        ours, self._handle = started or start_helper(launcher)
        self._sock = ours
        self._reader = LineReader(ours)
        self._lock = threading.Lock()
        self._jobs: dict[int, _JobHandle] = {}
        self._numbers = itertools.count(1)
        self._alive = True
        self._error: FlasherError | None = None
        self._exit_code: int | None = None
        try:
            self._greet()
        except BaseException:
            self._alive = False
            ours.close()
            self._handle.wait()
            raise
        self._thread = threading.Thread(target=self._follow, name="flasher-writer-session")
        self._thread.daemon = True
        self._thread.start()

    def _greet(self) -> None:
        await_hello(self._reader, self._sock, self._handle)
        self._sock.sendall(encode_session_start())

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._alive

    def attach(self, job_sock: socket.socket) -> _JobHandle:
        """Hand `job_sock` to the helper (OSError if the helper is gone)."""
        with self._lock:
            if not self._alive:
                raise BrokenPipeError("the writer helper has ended")
            conn = next(self._numbers)
            handle = self._jobs[conn] = _JobHandle(self)
            try:
                socket.send_fds(self._sock, [encode_attach(conn)], [job_sock.fileno()])
            except OSError:
                del self._jobs[conn]
                self._alive = False
                raise
        return handle

    def _follow(self) -> None:
        """Read the control connection until it ends, then settle every job still open."""
        try:
            while (line := self._reader.read_line(MAX_EVENT_BYTES)) is not None:
                event = decode_control_event(line)
                if isinstance(event, JobExit):
                    with self._lock:
                        job = self._jobs.pop(event.conn, None)
                    if job is None:
                        raise WriterProtocolError(
                            f"Writer protocol: an exit for job connection {event.conn}, "
                            "which is not open.",
                            hint="Reinstall Flasher so the app and its helper match.",
                        )
                    job.finish(event.code)
                else:
                    self._error = event.error
                    break
        except (FlasherError, OSError) as err:
            self._error = err if isinstance(err, FlasherError) else None
        with self._lock:
            self._alive = False
            jobs = list(self._jobs.values())
            self._jobs.clear()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        code = self._handle.wait()
        self._exit_code = code
        for job in jobs:
            job.finish(code)

    def diagnostics(self) -> str:
        parts = [self._handle.diagnostics() if self._exit_code is not None else ""]
        if self._error is not None:
            parts.append(self._error.message)
        return "\n".join(p for p in parts if p)

    def close(self) -> None:
        """End the session: the helper cancels what still runs, then exits."""
        with self._lock:
            self._alive = False
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        self._thread.join()
        self._sock.close()


class SharedHelper:
    """A Launcher whose jobs share one helper process; see the module docstring."""

    def __init__(
        self, launcher: Launcher | None = None, *, running: StartedHelper | None = None
    ) -> None:
        """`running`: a helper `launcher` already started (`start_helper`), the first to use."""
        self._launcher = launcher or default_launcher()
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._waiting = running
        self._closed = False
        self.started = 0  # helpers started so far

    def start(self) -> None:
        """Start the helper now, if none is running (so the first job does not wait for it);
        raises what starting it raises (AuthorizationDenied, WriterError)."""
        with self._lock:
            if self._closed:
                raise WriterError(
                    "The station's writer helper was stopped.", hint="Start the station again."
                )
            if self._session is None or not self._session.alive:
                self._new_session()

    def start_soon(self) -> None:
        """`start` on a thread of its own, so the helper's start-up overlaps the caller's work.

        A failure is left to the first job, which starts a helper again and raises why."""

        def start() -> None:
            with contextlib.suppress(FlasherError, OSError):
                self.start()

        threading.Thread(target=start, name="flasher-writer-start", daemon=True).start()

    def launch(self, sock: socket.socket) -> WriterHandle:
        try:
            with self._lock:
                if self._closed:
                    raise WriterError(
                        "The station's writer helper was stopped.",
                        hint="Start the station again.",
                    )
                for _attempt in range(2):
                    session = self._session
                    if session is None or not session.alive:
                        session = self._new_session()
                    try:
                        return session.attach(sock)
                    except OSError:
                        continue  # it ended just now: a new helper takes the job
                raise WriterError(
                    "The writer helper ended as soon as it started.",
                    hint="Reinstall Flasher if this happens again.",
                    action=Action.SHOW_DETAILS,
                )
        finally:
            sock.close()  # the helper holds its own copy

    def _new_session(self) -> _Session:
        """A session on the helper started ahead, the first time; on a new helper after."""
        started, self._waiting = self._waiting, None
        self._session = _Session(self._launcher, started)
        self.started += 1
        return self._session

    def close(self) -> None:
        """Stop the helper (after its jobs have ended; any still running are cancelled)."""
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
            waiting, self._waiting = self._waiting, None
        if session is not None:
            session.close()
        if waiting is not None:
            end_started(waiting)
