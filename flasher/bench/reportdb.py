"""Sending a bench report to PostgreSQL, so that every station's records meet in one database.

The local JSON-lines report stays the source of truth; the database gets a copy of each line.
An outbox makes the copy exact: a small state file beside the report (`<report>.sent-<id>`,
one per database) remembers the byte offset up to which lines are known to be in that
database. `ReportOutbox.sync()` sends every whole line after it, in file order, in one
transaction, then moves the offset. Rows are keyed by (station, card) and inserted with
`ON CONFLICT DO NOTHING`, so a resend after a crash between the commit and the state update
never duplicates a row. While the database is unreachable nothing moves, and the next sync
sends what was missed. `ReportShipper` runs syncs on a thread: after each card, and every
`retry_interval_s` while lines are waiting.

Core: never prints, imports no Qt. psycopg (the optional `db` extra) is imported only when a
database is used. The connection string may hold a password: it is never logged or put in an
error; `describe_dsn` gives a form without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flasher.errors import ConfigError, ReportDbError

log = logging.getLogger(__name__)

TABLE = "flasher_bench_cards"
CONNECT_TIMEOUT_S = 5
DEFAULT_RETRY_INTERVAL_S = 10.0
MAX_BATCH_LINES = 500
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    station text NOT NULL,
    card integer NOT NULL,
    ended_at timestamptz NOT NULL,
    ok boolean NOT NULL,
    verified boolean NOT NULL,
    error_code text,
    vendor text,
    model text,
    size_bytes bigint,
    bytes_written bigint,
    seconds double precision,
    mb_per_s double precision,
    device_uuid text,
    record jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station, card)
)
"""
INSERT = f"""
INSERT INTO {TABLE} (station, card, ended_at, ok, verified, error_code, vendor, model,
    size_bytes, bytes_written, seconds, mb_per_s, device_uuid, record)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (station, card) DO NOTHING
"""


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "report_db",
            "needs psycopg 3, which is not installed",
            hint="Install Flasher's optional 'db' extra (psycopg[binary]).",
        ) from None
    return psycopg


def check_dsn(dsn: str) -> None:
    """ConfigError unless `dsn` is a postgresql:// URL (checked before any I/O)."""
    if not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigError("report_db", "must be a postgresql:// URL")


def describe_dsn(dsn: str) -> str:
    """`postgresql://user@host:port/db` without a password or options, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(dsn)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


def _database_id(dsn: str) -> str:
    return hashlib.sha256(describe_dsn(dsn).encode()).hexdigest()[:12]


@contextmanager
def connect(dsn: str) -> Iterator[Any]:
    """A psycopg connection; ReportDbError (without the DSN's secrets) when it fails."""
    psycopg = _psycopg()
    try:
        conn = psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as err:
        raise ReportDbError(
            f"The report database {describe_dsn(dsn)} cannot be reached ({type(err).__name__}).",
            hint="Records stay in the local report and are sent when it is back.",
        ) from None
    try:
        yield conn
    finally:
        conn.close()


def ensure_table(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
    conn.commit()


def row_for(station: str, record: dict[str, Any]) -> tuple[Any, ...]:
    error = record.get("error") or {}
    return (
        station,
        int(record["card"]),
        record["timestamp"],
        bool(record.get("ok")),
        bool(record.get("verified")),
        error.get("code"),
        record.get("vendor"),
        record.get("model"),
        record.get("size_bytes"),
        record.get("bytes_written"),
        record.get("seconds"),
        record.get("mb_per_s"),
        record.get("device_uuid"),
        json.dumps(record),
    )


@dataclass(frozen=True)
class SyncResult:
    sent_lines: int
    pending_lines: int


class ReportOutbox:
    """The lines of one report not yet in one database, and sending them (see module doc)."""

    def __init__(self, report_path: str | os.PathLike[str], dsn: str, station: str) -> None:
        check_dsn(dsn)
        if not station:
            raise ConfigError("station_id", "must not be empty")
        self.report_path = Path(report_path)
        self.dsn = dsn
        self.station = station
        self.state_path = self.report_path.with_name(
            f"{self.report_path.name}.sent-{_database_id(dsn)}"
        )
        self._lock = threading.Lock()

    def sent_offset(self) -> int:
        try:
            state = json.loads(self.state_path.read_text())
            return int(state["offset"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError):
            # A damaged state file: resending everything is safe (the keys deduplicate).
            return 0

    def _save_offset(self, offset: int) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        data = json.dumps({"offset": offset, "database": describe_dsn(self.dsn)}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_path)

    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        """(end offset, record) of every whole line after the sent offset, in file order."""
        start = self.sent_offset()
        try:
            with open(self.report_path, "rb") as f:
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            return []
        out: list[tuple[int, dict[str, Any]]] = []
        offset = start
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # being appended right now
            offset += len(line)
            if line.strip():
                out.append((offset, json.loads(line)))
        return out

    def sync(self) -> SyncResult:
        """Send what is pending; ReportDbError when the database cannot take it (nothing is
        marked sent then)."""
        with self._lock:
            lines = self.pending()
            if not lines:
                return SyncResult(0, 0)
            psycopg = _psycopg()
            sent = 0
            with connect(self.dsn) as conn:
                try:
                    ensure_table(conn)
                    for first in range(0, len(lines), MAX_BATCH_LINES):
                        batch = lines[first : first + MAX_BATCH_LINES]
                        with conn.cursor() as cur:
                            cur.executemany(
                                INSERT, [row_for(self.station, rec) for _o, rec in batch]
                            )
                        conn.commit()
                        self._save_offset(batch[-1][0])
                        sent += len(batch)
                except psycopg.Error as err:
                    raise ReportDbError(
                        f"The report database {describe_dsn(self.dsn)} refused the records "
                        f"({type(err).__name__}).",
                        hint="Records stay in the local report and are sent when it works.",
                    ) from None
            return SyncResult(sent, len(lines) - sent)


class ReportShipper:
    """Runs `outbox.sync()` on a thread: on `notify()`, and every `retry_interval_s` while
    lines are waiting. `close()` makes a last attempt and stops it."""

    def __init__(
        self, outbox: ReportOutbox, *, retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S
    ) -> None:
        self.outbox = outbox
        self.retry_interval_s = retry_interval_s
        self.last_error: ReportDbError | None = None
        self.sent_lines = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flasher-report-db", daemon=True)

    def start(self) -> None:
        self._wake.set()  # lines left over from an earlier run go first
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def _attempt(self) -> bool:
        """One sync; True when nothing is left waiting."""
        try:
            result = self.outbox.sync()
        except (ReportDbError, ConfigError) as err:
            if self.last_error is None:
                log.warning("%s", err.message)
            self.last_error = err if isinstance(err, ReportDbError) else None
            return False
        except (OSError, ValueError) as err:
            log.warning("the bench report cannot be read for the database: %s", err)
            return False
        if self.last_error is not None:
            log.warning("the report database is back; the waiting records were sent")
        self.last_error = None
        self.sent_lines += result.sent_lines
        return result.pending_lines == 0

    def _loop(self) -> None:
        waiting = False
        while not self._stop.is_set():
            woke = self._wake.wait(self.retry_interval_s if waiting else None)
            if self._stop.is_set():
                break
            self._wake.clear()
            if woke or waiting:
                waiting = not self._attempt()

    def close(self) -> int:
        """Stop the thread after a last attempt; the number of lines still waiting."""
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join()
        self._attempt()
        return len(self.outbox.pending())
