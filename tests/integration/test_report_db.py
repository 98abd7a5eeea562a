"""Bench records in PostgreSQL: a real server (private cluster), each local report line sent
once, in order, none lost while the database is down and none twice after it comes back; the
summaries of a file and of the database agree."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flasher.bench.report import CardRecord, ReportLog
from flasher.bench.reportdb import TABLE, ReportOutbox, ReportShipper, connect
from flasher.bench.summary import records_from_db, records_from_file, summarise
from flasher.errors import ConfigError, ReportDbError
from tests.support.postgres import PostgresServer, require_postgres

WAIT_S = 60  # a guard against a hang, never a measurement


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    require_postgres()
    pg = PostgresServer()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def db(server: PostgresServer) -> Iterator[PostgresServer]:
    with connect(server.dsn) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.commit()
    yield server


def _record(card: int, *, ok: bool = True, minute: int = 0, **extra: Any) -> CardRecord:
    fields: dict[str, Any] = {
        "timestamp": f"2026-03-02T10:{minute:02d}:00+00:00",
        "card": card,
        "slot": "pci-0000:00:14.0-usb-0:1.1",
        "slot_number": 1,
        "device": "/dev/sdb",
        "serial": None,
        "vendor": "Generic",
        "model": "SD Reader",
        "size_bytes": 31914983424,
        "image_sha256": "ab" * 32,
        "device_type": "raspberrypi4-64",
        "os_version": "6.5.50+rev8",
        "config_sha256": None,
        "hostname": f"kiosk-{card}",
        "ok": ok,
        "verified": ok,
        "bytes_written": 400_000_000 if ok else 0,
        "seconds": 60.0,
        "write_seconds": 40.0,
        "written_sha256": None,
        "error_code": None if ok else "verify_mismatch",
        "error_message": None if ok else "The card read back differently.",
    }
    fields.update(extra)
    return CardRecord(**fields)


def _db_records(dsn: str, station: str) -> list[dict[str, Any]]:
    return [r for s, r in records_from_db(dsn, [station]) if s == station]


def _local(report: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in report.read_text().splitlines()]


def test_each_line_is_sent_once(db: PostgresServer, tmp_path: Path) -> None:
    report = ReportLog(tmp_path / "cards.jsonl")
    outbox = ReportOutbox(report.path, db.dsn, "bench-a")
    for card in (1, 2):
        report.append(_record(card))
    assert outbox.sync().sent_lines == 2
    report.append(_record(3, ok=False))
    assert outbox.sync().sent_lines == 1
    assert outbox.sync().sent_lines == 0
    assert _db_records(db.dsn, "bench-a") == _local(report.path)


def test_resending_everything_never_duplicates_a_row(db: PostgresServer, tmp_path: Path) -> None:
    report = ReportLog(tmp_path / "cards.jsonl")
    for card in (1, 2, 3):
        report.append(_record(card))
    outbox = ReportOutbox(report.path, db.dsn, "bench-a")
    outbox.sync()
    outbox.state_path.unlink()  # as if the station died between the commit and the state
    assert outbox.sync().sent_lines == 3
    assert len(_db_records(db.dsn, "bench-a")) == 3


def test_unreachable_database_keeps_the_lines_waiting(
    server: PostgresServer, db: PostgresServer, tmp_path: Path
) -> None:
    report = ReportLog(tmp_path / "cards.jsonl")
    outbox = ReportOutbox(report.path, db.dsn, "bench-a")
    report.append(_record(1))
    server.stop()
    try:
        with pytest.raises(ReportDbError):
            outbox.sync()
        assert len(outbox.pending()) == 1
    finally:
        server.start()
    assert outbox.sync().sent_lines == 1


def _wait_until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_two_stations_through_a_database_restart_match_their_reports_row_by_row(
    server: PostgresServer, db: PostgresServer, tmp_path: Path
) -> None:
    stations = {}
    for name in ("bench-a", "bench-b"):
        report = ReportLog(tmp_path / f"{name}.jsonl")
        shipper = ReportShipper(ReportOutbox(report.path, db.dsn, name), retry_interval_s=0.1)
        shipper.start()
        stations[name] = (report, shipper)

    def add(cards: range) -> None:
        for card in cards:
            for report, shipper in stations.values():
                report.append(_record(card, minute=card, ok=card % 4 != 0))
                shipper.notify()

    try:
        add(range(1, 6))
        _wait_until(lambda: all(not s.outbox.pending() for _r, s in stations.values()))
        server.stop()
        add(range(6, 11))  # made while the database is down
        _wait_until(lambda: all(s.last_error is not None for _r, s in stations.values()))
        assert all(len(s.outbox.pending()) == 5 for _r, s in stations.values())
        server.start()
        add(range(11, 13))
        _wait_until(lambda: all(not s.outbox.pending() for _r, s in stations.values()))
    finally:
        left = [shipper.close() for _report, shipper in stations.values()]
    assert left == [0, 0]
    for name, (report, _shipper) in stations.items():
        assert _db_records(db.dsn, name) == _local(report.path)
        assert [r["card"] for r in _local(report.path)] == list(range(1, 13))


def test_report_db_must_be_a_postgresql_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="postgresql://"):
        ReportOutbox(tmp_path / "cards.jsonl", "mysql://x@y/z", "bench-a")


def test_password_in_the_url_never_reaches_an_error(tmp_path: Path) -> None:
    report = ReportLog(tmp_path / "cards.jsonl")
    report.append(_record(1))
    dsn = "postgresql://flasher:hunter2-secret@127.0.0.1:9/postgres"
    with pytest.raises(ReportDbError) as caught:
        ReportOutbox(report.path, dsn, "bench-a").sync()
    assert "hunter2-secret" not in str(caught.value.to_dict())


def test_summary_counts_per_station_day_and_model() -> None:
    rows = [
        ("a", _record(1, minute=0).to_dict()),
        ("a", _record(2, minute=30, ok=False).to_dict()),
        ("a", _record(3, minute=59, write_seconds=20.0).to_dict()),
        ("a", _record(4, model="Other").to_dict()),
        ("b", _record(1).to_dict()),
    ]
    groups = {(g.station, g.model): g for g in summarise(rows)}
    first = groups[("a", "Generic SD Reader")]
    assert (first.done, first.failed) == (2, 1)
    assert first.failed_by_reason == {"verify_mismatch": 1}
    assert first.median_mb_per_s == 15.0  # 10.0 and 20.0 MB/s
    assert first.cards_per_hour == 3.0  # three cards from 09:59 to 10:59
    assert groups[("b", "Generic SD Reader")].done == 1
    assert {g.day for g in groups.values()} == {"2026-03-02"}


def test_summary_of_the_database_equals_the_summary_of_the_reports(
    db: PostgresServer, tmp_path: Path
) -> None:
    report = ReportLog(tmp_path / "cards.jsonl")
    for card in range(1, 8):
        report.append(_record(card, minute=card * 3, ok=card != 5))
    ReportOutbox(report.path, db.dsn, "bench-a").sync()
    from_file = summarise(records_from_file(report.path, "bench-a"))
    assert summarise(records_from_db(db.dsn)) == from_file
