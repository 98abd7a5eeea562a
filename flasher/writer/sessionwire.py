"""The writer protocol's session: one helper serving many jobs (a bench station's cards).

Standard library plus flasher.errors and flasher.writer modules only (the root helper imports
it).

A client that wants one long-lived helper sends, after the helper's hello, the session line
instead of a job request:
```
{"v":2,"op":"session"}
```
From then on that connection (the control connection) carries only these lines:

- client → helper: `{"op":"attach","conn":N}` with exactly one file descriptor attached
  (SCM_RIGHTS): one end of a new unix stream socketpair. The helper serves one job on it,
  exactly as on a connection of its own (hello, one write/verify/probe request with its fds,
  events, `end`; EOF cancels; every target checked by the policy). `conn` numbers the job
  connections: 1, then strictly increasing, never reused.
- helper → client: `{"event":"job_exit","conn":N,"code":C}` once the job on connection N is
  over (C: the exit code a helper of its own would have had), and `{"event":"end","ok":false,
  "error":…}` when the session itself breaks the protocol (the helper then stops).

Anything else (an unknown op or field, a repeated or decreasing `conn`, no descriptor or more
than one, a descriptor that is not a unix stream socket, a session line on a job connection)
is a protocol error that ends the session. EOF on the control connection cancels every job
still running; the helper exits once they have ended (their cards left unbootable as usual).
The jobs share one buffer budget: each sizes its I/O pieces for every target of the helper's
jobs running when it starts, and for no fewer than 16 (flasher.writer.helper_session).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from flasher.writer.protocol import MAX_EVENT_BYTES, PROTOCOL_VERSION, JobEnd, decode_event
from flasher.writer.strictjson import Fields, fail, loads

SESSION_OP = "session"
ATTACH_OP = "attach"
JOB_EXIT_EVENT = "job_exit"
MAX_CONTROL_BYTES = 1024
MAX_CONN = 2**31 - 1


@dataclass(frozen=True)
class JobExit:
    conn: int
    code: int


def encode_session_start() -> bytes:
    return (json.dumps({"v": PROTOCOL_VERSION, "op": SESSION_OP}) + "\n").encode()


def is_session_request(line: bytes) -> bool:
    """Whether a first request line asks for a session (checked strictly by decode)."""
    try:
        data = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("op") == SESSION_OP


def decode_session_start(line: bytes) -> None:
    top = Fields(loads(line, MAX_CONTROL_BYTES), "session")
    version = top.integer("v")
    if version != PROTOCOL_VERSION:
        fail(f"session version {version}, this helper speaks {PROTOCOL_VERSION}")
    if top.text("op") != SESSION_OP:
        fail("not a session request")
    top.done()


def encode_attach(conn: int) -> bytes:
    return (json.dumps({"op": ATTACH_OP, "conn": conn}, separators=(",", ":")) + "\n").encode()


def decode_attach(line: bytes, last_conn: int) -> int:
    """The connection number of an attach line; it must be greater than `last_conn`."""
    f = Fields(loads(line, MAX_CONTROL_BYTES), "attach")
    op = f.text("op")
    if op != ATTACH_OP:
        fail(f"unknown session op {op!r}")
    conn = f.integer("conn", minimum=1)
    f.done()
    if conn > MAX_CONN:
        fail(f"attach.conn must be at most {MAX_CONN}")
    if conn <= last_conn:
        fail(f"job connection {conn} was already used (the last was {last_conn})")
    return conn


def encode_job_exit(event: JobExit) -> bytes:
    data = {"event": JOB_EXIT_EVENT, "conn": event.conn, "code": event.code}
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()


def decode_control_event(line: bytes) -> JobExit | JobEnd:
    """One line from the helper on the control connection, strictly: `job_exit` or `end`."""
    f = Fields(loads(line, MAX_EVENT_BYTES), "event")
    kind = f.text("event")
    if kind != JOB_EXIT_EVENT:
        event = decode_event(line)
        if not isinstance(event, JobEnd):
            fail(f"unexpected event {kind!r} on the session's control connection")
        return event
    f.where = JOB_EXIT_EVENT
    conn = f.integer("conn", minimum=1)
    code = f.integer("code")
    f.done()
    return JobExit(conn, code)
