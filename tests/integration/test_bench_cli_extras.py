"""The CLI of the bench's second pass: `drives check`, `bench report`, `bench devices`, the
settings checked before any I/O, and a bench run whose records reach PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flasher.balena.registration import FleetCredentials, Registrar
from flasher.balena.session import BalenaSession
from flasher.bench.report import ReportLog
from flasher.bench.summary import records_from_db
from flasher.cli.main import main
from flasher.models import Secret
from flasher.sandbox.server import SandboxServer
from tests.conftest import ImageFactory
from tests.integration.test_report_db import _record
from tests.support.bench import Slots, _card_bytes
from tests.support.bootcheck import file_sha256
from tests.support.images import BuiltImage
from tests.support.loopdev import LoopDevices, require_loop
from tests.support.postgres import PostgresServer, require_postgres

MiB = 1024 * 1024


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    require_postgres()
    pg = PostgresServer()
    try:
        yield pg
    finally:
        pg.close()


def test_drives_check_passes_an_honest_drive_and_keeps_its_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drive = tmp_path / "card.img"
    drive.write_bytes(bytes(range(256)) * (32 * MiB // 256))
    before = drive.read_bytes()
    code = main(["--json", "drives", "check", str(drive), "--yes"])
    (result,) = _json_lines(capsys.readouterr().out)
    assert code == 0 and result["ok"] and result["real_bytes"] == 32 * MiB
    assert drive.read_bytes() == before


def test_drives_check_needs_consent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    drive = tmp_path / "card.img"
    drive.write_bytes(b"\x11" * MiB)
    code = main(["--json", "drives", "check", str(drive)])
    (error,) = _json_lines(capsys.readouterr().out)
    assert code == 1 and "--yes" in error["hint"]
    assert drive.read_bytes() == b"\x11" * MiB


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (["--register"], "register"),
        (["--reuse-unflashed"], "reuse_unflashed"),
        (["--report-db", "mysql://user@db/cards"], "report_db"),
        (["--station-id", " "], "station_id"),
    ],
)
def test_bench_settings_are_refused_before_any_io(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], field: str
) -> None:
    code = main(["--json", "bench", str(tmp_path / "missing.img"), *options, "--yes"])
    (error,) = _json_lines(capsys.readouterr().out)
    assert code == 2 and error["code"] == "invalid_config"
    assert error["details"]["field"] == field


def test_bench_report_summarises_a_local_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = ReportLog(tmp_path / "cards.jsonl")
    for card in (1, 2, 3):
        report.append(_record(card, minute=card * 10, ok=card != 2))
    code = main(
        ["--json", "bench", "report", "--report", str(report.path), "--station-id", "bench-a"]
    )
    (groups,) = _json_lines(capsys.readouterr().out)
    assert code == 0
    assert [(g["station"], g["done"], g["failed"]) for g in groups] == [("bench-a", 2, 1)]
    assert groups[0]["failed_by_reason"] == {"verify_mismatch": 1}


def test_bench_devices_lists_devices_registered_for_failed_cards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = ReportLog(tmp_path / "cards.jsonl")
    report.append(_record(1, device_uuid="a" * 32))
    report.append(_record(2, ok=False, device_uuid="b" * 32))
    report.append(_record(3, ok=False, device_uuid="c" * 32))
    report.append(_record(4, device_uuid="c" * 32))  # reused and flashed since
    code = main(["--json", "bench", "devices", "--report", str(report.path)])
    (rows,) = _json_lines(capsys.readouterr().out)
    assert code == 0 and [r["uuid"] for r in rows] == ["b" * 32]


def _bench_run(image: BuiltImage, tmp_path: Path, report: Path, *options: str) -> int:
    with LoopDevices(tmp_path) as loops:
        slots = Slots(loops)
        slot = slots.add()
        slots.insert(slot, _card_bytes(image))
        argv = ["--json", "bench", str(image.path), "--slot", slot.path, "--bus", "loop"]
        argv += ["--include-present", "--once", "1", "--yes", "--report", str(report)]
        argv += ["--sha256", file_sha256(image.path)]  # a raw image proves nothing on its own
        return main([*argv, *options])


@pytest.mark.root
def test_bench_run_sends_its_records_to_the_report_database(
    server: PostgresServer,
    mbr_image: ImageFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_loop()
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    report = tmp_path / "cards.jsonl"
    db = ["--report-db", server.dsn, "--station-id", "bench-cli"]
    code = _bench_run(mbr_image(), tmp_path, report, *db)
    events = _json_lines(capsys.readouterr().out)
    assert code == 0, events[-3:]
    local = ReportLog(report).records()
    assert local[0]["capacity_bytes"] > 0  # probed by default
    assert [r for _s, r in records_from_db(server.dsn, ["bench-cli"])] == local


@pytest.mark.root
def test_bench_run_while_the_database_is_down_leaves_its_records_for_sync(
    server: PostgresServer,
    mbr_image: ImageFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_loop()
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    report = tmp_path / "cards.jsonl"
    db = ["--report-db", server.dsn, "--station-id", "bench-down"]
    server.stop()
    try:
        code = _bench_run(mbr_image(), tmp_path, report, *db)
    finally:
        server.start()
    events = _json_lines(capsys.readouterr().out)
    assert code == 0, events[-3:]
    assert any("not in the report database yet" in e.get("message", "") for e in events)
    assert records_from_db(server.dsn, ["bench-down"]) == []
    assert main(["--json", "bench", "sync", "--report", str(report), *db]) == 0
    assert [r for _s, r in records_from_db(server.dsn, ["bench-down"])] == ReportLog(
        report
    ).records()


@pytest.mark.root
def test_station_file_runs_a_bench(
    mbr_image: ImageFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_loop()
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    image: BuiltImage = mbr_image()
    report = tmp_path / "cards.jsonl"
    with LoopDevices(tmp_path) as loops:
        slots = Slots(loops)
        slot = slots.add()
        slots.insert(slot, _card_bytes(image))
        station = tmp_path / "station.toml"
        station.write_text(
            f'source = "{image.path}"\nsha256 = "{file_sha256(image.path)}"\n'
            f'[slots]\nslot = ["{slot.path}"]\nbus = ["loop"]\ninclude-present = true\n'
            f'[run]\nonce = 1\nyes = true\nreport = "{report}"\n'
            'hostname-template = "station-{n}"\n'
        )
        code = main(["--json", "bench", "--station", str(station)])
    events = _json_lines(capsys.readouterr().out)
    assert code == 0, events[-3:]
    (record,) = ReportLog(report).records()
    assert record["verified"] and record["hostname"] == "station-1"


def test_bench_devices_deletes_the_unflashed_devices_from_the_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SandboxServer.start() as sandbox:
        login = BalenaSession(sandbox.url, Secret("login"))
        registrar = Registrar(login, FleetCredentials(1958513, "raspberrypi4-64", None))
        left, flashed = registrar.register(), registrar.register()
        report = ReportLog(tmp_path / "cards.jsonl")
        report.append(_record(1, ok=False, device_uuid=left.uuid))
        report.append(_record(2, device_uuid=flashed.uuid))
        argv = ["--api-url", sandbox.url, "--token", "login", "--json", "bench", "devices"]
        argv += ["--report", str(report.path), "--fleet", "1958513", "--delete-unflashed"]
        code = main(argv)
        (rows,) = _json_lines(capsys.readouterr().out)
        listed = {r["uuid"] for r in login.pine_get("device", {"$select": ["uuid"]})}
    assert code == 0
    assert [(r["uuid"], r["card"], r["error"], r["deleted"]) for r in rows] == [
        (left.uuid, 1, "verify_mismatch", True)
    ]
    assert left.uuid not in listed and flashed.uuid in listed


def test_bench_sync_sends_what_a_run_left_waiting(
    server: PostgresServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = ReportLog(tmp_path / "cards.jsonl")
    for card in (1, 2):
        report.append(_record(card))
    argv = ["--json", "bench", "sync", "--report", str(report.path), "--report-db", server.dsn]
    argv += ["--station-id", "bench-sync"]
    assert main(argv) == 0
    assert main(argv) == 0
    first, second = _json_lines(capsys.readouterr().out)
    assert (first["sent"], second["sent"], second["waiting"]) == (2, 0, 0)
    assert [r for _s, r in records_from_db(server.dsn, ["bench-sync"])] == report.records()
