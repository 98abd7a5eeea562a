"""The helper's side of a session (flasher.writer.sessionwire): many jobs, one helper process.

Standard library plus flasher.errors, flasher.events and flasher.writer modules only (the root
helper imports it; it must not import flasher.writer.helper, which calls it). Each attached job
connection is served on a thread of its own by the one-job server the helper hands in (the same
request checks, policy, engine and cancel as a helper of its own); this module only accepts the
connections, keeps their numbers strict, reports each job's exit, and shares the buffer budget.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Callable

from flasher.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE, FlasherError
from flasher.events import CancelToken
from flasher.writer.framing import LineReader
from flasher.writer.protocol import JobEnd, encode_event
from flasher.writer.sessionwire import (
    MAX_CONTROL_BYTES,
    JobExit,
    decode_attach,
    decode_session_start,
    encode_job_exit,
)
from flasher.writer.strictjson import fail

# A session's jobs size their I/O pieces for at least this many targets. A station's cards
# arrive in batches and a job cannot shrink its buffers once started, so the first cards of a
# batch must not take the budget the rest of it needs: with 16, every job of a session uses the
# smallest pieces (1 MiB), and 16 cards' write buffers stay within the one budget of a job.
SESSION_BUDGET_TARGETS = 16


class SharedBudget:
    """How many targets the helper's running jobs write: each job sizes its I/O pieces for
    them all (and for no fewer than `floor`), so the buffers of a station's cards stay within
    the one budget of a job."""

    def __init__(self, floor: int = 0) -> None:
        self._lock = threading.Lock()
        self._targets = 0
        self._floor = floor

    def take(self, count: int) -> int:
        """Count `count` more targets; how many to size the pieces for (those now running,
        theirs included, and at least the floor)."""
        with self._lock:
            self._targets += count
            return max(self._targets, self._floor)

    def give_back(self, count: int) -> None:
        with self._lock:
            self._targets -= count


JobServer = Callable[[socket.socket, CancelToken, SharedBudget], int]


def _job_socket(fds: list[int]) -> socket.socket:
    """The one descriptor an attach line carries, as a unix stream socket (or a protocol error;
    the descriptors are closed either way)."""
    if len(fds) != 1:
        count = len(fds)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        fds.clear()
        fail(f"an attach line carries exactly one socket, not {count} descriptors")
    fd = fds.pop()
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            fail("an attach line's descriptor must be a socket")
        sock = socket.socket(fileno=fd)
    except BaseException:
        os.close(fd)
        raise
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.close()
        fail("an attach line's descriptor must be a unix stream socket")
    return sock


def _stop_reading(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


class _Session:
    def __init__(self, sock: socket.socket, serve_job: JobServer, cancel: CancelToken) -> None:
        self.sock = sock
        self.serve_job = serve_job
        self.cancel = cancel
        self.budget = SharedBudget(SESSION_BUDGET_TARGETS)
        self.send_lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def send(self, line: bytes) -> None:
        with self.send_lock:
            try:
                self.sock.sendall(line)
            except OSError:
                self.cancel.cancel()  # the client is gone: stop every job

    def start_job(self, conn: int, job_sock: socket.socket) -> None:
        job_cancel = CancelToken()
        self.cancel.on_cancel(job_cancel.cancel)
        # A job still waiting for its request wakes up as if its client had left; one already
        # running is cancelled and still reports how each target ended.
        job_cancel.on_cancel(lambda: _stop_reading(job_sock))

        def serve() -> None:
            code = EXIT_ERROR
            try:
                code = self.serve_job(job_sock, job_cancel, self.budget)
            finally:
                job_sock.close()
                self.send(encode_job_exit(JobExit(conn, code)))

        thread = threading.Thread(target=serve, name=f"flasher-writer-job-{conn}", daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()]
        self.threads.append(thread)
        thread.start()

    def finish(self) -> None:
        self.cancel.cancel()
        for thread in self.threads:
            thread.join()


def serve_session(
    sock: socket.socket,
    reader: LineReader,
    first_line: bytes,
    serve_job: JobServer,
    cancel: CancelToken,
) -> int:
    """Serve a session on `sock` (after hello and its first line) until EOF; the exit code."""
    session = _Session(sock, serve_job, cancel)
    last_conn = 0
    code = EXIT_OK
    try:
        decode_session_start(first_line)
        while (line := reader.read_line(MAX_CONTROL_BYTES)) is not None:
            last_conn = decode_attach(line, last_conn)
            session.start_job(last_conn, _job_socket(reader.fds))
        if reader.fds:
            fail("descriptors arrived without an attach line")
    except FlasherError as err:
        session.send(encode_event(JobEnd(False, err)))
        code = EXIT_USAGE
    finally:
        for fd in reader.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        session.finish()
    return code
