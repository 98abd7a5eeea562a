"""Bench station parts without devices: the drive policy and slots, hostname templates, the
report file, the board the terminal view draws, and `--min-size`/`--max-size` parsing."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from flasher.bench.board import EMPTY, WAITING, Board
from flasher.bench.events import (
    CardFinished,
    CardInserted,
    CardRemoved,
    CardSkipped,
    CardUpdate,
    StationReady,
)
from flasher.bench.image import CardFacts, check_hostname_template, render_hostname
from flasher.bench.policy import DrivePolicy, Slot
from flasher.bench.report import CardRecord, ReportLog
from flasher.bench.station import StationSummary
from flasher.cli import bench_views
from flasher.cli.bench_slots import parse_size
from flasher.cli.hints import cli_hint
from flasher.error_codes import Action
from flasher.errors import ConfigError, FlasherError
from flasher.events import Phase, PhaseChanged, Progress
from flasher.models import Drive

GB = 10**9
BY_PATH = "/dev/disk/by-path/pci-0000:00:14.0-usb-0:1.2:1.0-scsi-0:0:0:0"
CARD = Drive(
    path="/dev/sdb",
    size_bytes=32 * GB,
    dev="8:16",
    serial="AA01",
    vendor="Generic",
    model="SD Reader",
    bus="usb",
    removable=True,
    by_path=(BY_PATH,),
)
SD_SLOT = replace(
    CARD,
    path="/dev/mmcblk0",
    dev="179:0",
    bus="mmc",
    removable=False,
    by_path=("/dev/disk/by-path/platform-fe340000.mmc",),
)
LOOP = replace(CARD, path="/dev/loop7", dev="7:7", bus="loop", removable=False, by_path=())
SATA = replace(
    CARD,
    path="/dev/sda",
    dev="8:0",
    bus="ata",
    removable=False,
    internal=True,
    by_path=("/dev/disk/by-path/pci-0000:00:17.0-ata-1",),
)
NVME = replace(
    CARD, path="/dev/nvme0n1", dev="259:0", bus="nvme", removable=False, internal=True, by_path=()
)
LOOPS = DrivePolicy(buses=frozenset({"loop"}))


@pytest.mark.parametrize(
    ("policy", "drive", "refused"),
    [
        (DrivePolicy(), CARD, None),
        (DrivePolicy(), SD_SLOT, None),
        (DrivePolicy(), replace(SATA, removable=True, internal=False), None),
        (DrivePolicy(), SATA, "internal disk"),
        (DrivePolicy(buses=frozenset({"ata"})), SATA, "internal disk"),
        (DrivePolicy(), LOOP, "not a removable card (loop bus)"),
        (LOOPS, LOOP, None),
        (DrivePolicy(), replace(CARD, system=True), "system drive"),
        (LOOPS, replace(LOOP, system=True), "system drive"),
        (
            DrivePolicy(slots=("/dev/loop7",), buses=frozenset({"loop"})),
            replace(LOOP, system=True),
            "system drive",
        ),
        (DrivePolicy(), replace(NVME, removable=True, internal=False), "internal nvme disk"),
        (DrivePolicy(), replace(CARD, is_file=True), "not a drive"),
        (
            DrivePolicy(),
            replace(CARD, size_bytes=129 * GB),
            "129.0 GB is above the bench's limit of 128.0 GB",
        ),
        (DrivePolicy(max_size_bytes=None), replace(CARD, size_bytes=2000 * GB), None),
        (
            DrivePolicy(min_size_bytes=8 * GB),
            replace(CARD, size_bytes=4 * GB),
            "4.0 GB is below the bench's minimum of 8.0 GB",
        ),
        (
            DrivePolicy(slots=("pci-0000:00:14.0-usb-0:1.1:*",)),
            CARD,
            "not in one of the bench's slots",
        ),
        (DrivePolicy(slots=("pci-0000:00:14.0-usb-0:1.2:*",)), CARD, None),
    ],
    ids=[
        "usb",
        "sd-slot",
        "removable-sata-reader",
        "internal-sata",
        "internal-sata-allowed",
        "loop-by-default",
        "loop-allowed",
        "system",
        "system-loop-allowed",
        "system-in-a-slot",
        "nvme",
        "file",
        "too-large",
        "no-limit",
        "too-small",
        "other-slot",
        "its-slot",
    ],
)
def test_policy_takes_only_bench_cards(
    policy: DrivePolicy, drive: Drive, refused: str | None
) -> None:
    assert policy.refusal(drive) == refused


SYSTEM_DRIVES = [replace(d, system=True) for d in (CARD, SD_SLOT, LOOP, SATA)]
INTERNAL_DRIVES = [SATA, NVME, replace(SATA, by_path=(), path="/dev/sdz")]
LENIENT = [
    DrivePolicy(),
    DrivePolicy(buses=frozenset({"usb", "mmc", "loop", "ata", "scsi"}), max_size_bytes=None),
    DrivePolicy(slots=("*",), buses=frozenset({"loop", "ata"}), removable=True),
    DrivePolicy(slots=("/dev/*", "sd?", "loop*"), buses=frozenset({"loop"})),
]


@pytest.mark.parametrize("policy", LENIENT)
def test_no_policy_ever_offers_a_system_drive_or_an_internal_disk(policy: DrivePolicy) -> None:
    offered = policy.offered([*SYSTEM_DRIVES, *INTERNAL_DRIVES, CARD])
    assert offered == [CARD]


@pytest.mark.parametrize("bus", ["nvme", "virtio"])
def test_internal_buses_cannot_be_allowed(bus: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DrivePolicy(buses=frozenset({"usb", bus}))
    assert caught.value.field == "bus"


@pytest.mark.parametrize(
    ("slots", "drive", "expected"),
    [
        ((), CARD, Slot(BY_PATH, "/dev/sdb")),
        ((), LOOP, Slot("/dev/loop7", "/dev/loop7")),
        (("/dev/loop[0-6]", "/dev/loop7"), LOOP, Slot("/dev/loop7", "/dev/loop7", 2)),
        (("loop7",), LOOP, Slot("/dev/loop7", "/dev/loop7", 1)),
        (("*usb-0:1.1:*", "*usb-0:1.2:*"), CARD, Slot(BY_PATH, "/dev/sdb", 2)),
        ((BY_PATH,), CARD, Slot(BY_PATH, "/dev/sdb", 1)),
        (("sdb",), CARD, Slot(BY_PATH, "/dev/sdb", 1)),
    ],
    ids=["by-path", "no-link", "path-glob", "device-name", "link-glob", "full-link", "sdb"],
)
def test_slot_is_named_by_its_port_and_numbered_by_its_pattern(
    slots: tuple[str, ...], drive: Drive, expected: Slot
) -> None:
    assert DrivePolicy(slots=slots, buses=frozenset({"usb", "loop"})).slot_of(drive) == expected


def _facts(n: int = 7, *, serial: str = "AA01", number: int | None = 3) -> CardFacts:
    drive = replace(CARD, serial=serial)
    return CardFacts(n=n, slot=Slot(BY_PATH, "/dev/sdb", number), drive=drive)


@pytest.mark.parametrize(
    ("template", "facts", "hostname"),
    [
        ("bench-{n:04d}", _facts(), "bench-0007"),
        ("bench-{slot}-{n}", _facts(), "bench-3-7"),
        ("bench-{slot}-{n}", _facts(number=None), "bench-sdb-7"),
        ("kiosk-{serial}", _facts(serial="AB_12 CD"), "kiosk-ab-12-cd"),
    ],
    ids=["number", "slot", "unnumbered-slot", "serial-cleaned"],
)
def test_hostname_template_fills_in_the_card(
    template: str, facts: CardFacts, hostname: str
) -> None:
    check_hostname_template(template, numbered_slots=True)
    assert render_hostname(template, facts) == hostname


@pytest.mark.parametrize(
    "template",
    ["bench-{uuid}", "bench", "Bench-{n}", "bench.{n}", "bench-{n.real}", "bench-{", "{}"],
    ids=["unknown-field", "no-field", "uppercase", "dot", "attribute", "unclosed", "positional"],
)
def test_bad_hostname_templates_are_refused_up_front(template: str) -> None:
    with pytest.raises(ConfigError):
        check_hostname_template(template, numbered_slots=False)


def test_serial_template_fails_for_a_card_without_a_serial() -> None:
    with pytest.raises(ConfigError) as caught:
        render_hostname("kiosk-{serial}", _facts(serial=""))
    assert "{n}" in (caught.value.hint or "")


def _record(card: int, *, ok: bool = True) -> CardRecord:
    return CardRecord(
        timestamp="2026-01-01T00:00:00+00:00",
        card=card,
        slot=BY_PATH,
        slot_number=1,
        device="/dev/sdb",
        serial="AA01",
        vendor="Generic",
        model="SD Reader",
        size_bytes=32 * GB,
        image_sha256="ab" * 32,
        device_type="raspberrypi4-64",
        os_version="6.5.50+rev8",
        config_sha256="cd" * 32,
        hostname=f"bench-{card}",
        ok=ok,
        verified=ok,
        bytes_written=40_000_000 if ok else 0,
        seconds=2.5,
        write_seconds=2.0 if ok else 0.0,
        written_sha256="ef" * 32 if ok else None,
        error_code=None if ok else "drive_gone",
        error_message=None if ok else "The card in slot 1 was removed before it was finished.",
    )


def test_report_appends_one_line_per_card_after_earlier_runs(tmp_path: Path) -> None:
    path = tmp_path / "bench" / "cards.jsonl"
    ReportLog(path).append(_record(1))
    later = ReportLog(path)
    assert later.count() == 1
    later.append(_record(2, ok=False))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["card"], r["ok"]) for r in lines] == [(1, True), (2, False)]
    assert lines[0]["mb_per_s"] == 20.0 and lines[0]["error"] is None
    assert lines[1]["error"]["code"] == "drive_gone" and lines[1]["mb_per_s"] is None


def test_unwritable_report_is_refused_before_the_bench_starts(tmp_path: Path) -> None:
    # A folder that is a regular file cannot hold the report, whoever runs the bench (root
    # ignores permission bits, so a read-only folder would prove nothing there).
    not_a_folder = tmp_path / "taken"
    not_a_folder.write_bytes(b"")
    with pytest.raises(FlasherError) as caught:
        ReportLog(not_a_folder / "cards.jsonl")
    assert caught.value.action is Action.CHOOSE_REPORT_FILE
    assert "--report" in (cli_hint(caught.value) or "")
    assert not_a_folder.read_bytes() == b""


def test_report_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FlasherError) as caught:
        ReportLog(tmp_path)
    assert str(tmp_path) in caught.value.message


def test_board_follows_a_card_through_its_slot() -> None:
    board = Board()
    slot = Slot(BY_PATH, "/dev/sdb", 1)
    board.handle(CardInserted(slot, CARD, 7))
    assert [r.state for r in board.rows()] == [WAITING]
    board.handle(StationReady({}, None))
    board.handle(CardUpdate(slot, Progress(Phase.WRITING, 25, 100, 5e6, 15.0, "/dev/sdb")))
    (row,) = board.rows()
    assert (row.state, row.fraction, row.eta_s, board.active) == ("writing", 0.25, 15.0, 1)
    board.handle(CardFinished(slot, _record(7)))
    (row,) = board.rows()
    assert (row.state, board.done, board.failed, board.active) == ("done", 1, 0, 0)
    assert "bench-7" in row.note
    board.handle(CardRemoved(slot, CARD, during_write=False))
    assert [r.state for r in board.rows()] == [EMPTY]


def test_board_counts_a_pulled_card_as_failed_and_keeps_its_reason() -> None:
    board = Board()
    slot = Slot(BY_PATH, "/dev/sdb", 1)
    board.handle(StationReady({}, None))
    board.handle(CardInserted(slot, CARD, 2))
    board.handle(CardUpdate(slot, PhaseChanged(Phase.WRITING, "/dev/sdb")))
    board.handle(CardRemoved(slot, CARD, during_write=True))
    board.handle(CardFinished(slot, _record(2, ok=False)))
    (row,) = board.rows()
    assert (row.state, board.failed) == ("failed", 1)
    assert "removed" in row.note


def test_board_shows_only_drives_in_the_bench() -> None:
    board = Board()
    board.handle(
        CardSkipped(
            Slot("/dev/sdc", "/dev/sdc"), CARD, "not in one of the bench's slots", in_bench=False
        )
    )
    board.handle(CardSkipped(Slot(BY_PATH, "/dev/sdb", 1), CARD, "too small"))
    assert [r.slot.number for r in board.rows()] == [1]


@pytest.mark.parametrize(
    ("text", "size_bytes"),
    [
        ("8G", 8 * GB),
        ("7.5GB", 7_500_000_000),
        ("512M", 512_000_000),
        ("8GiB", 8 * 2**30),
        ("1000", 1000),
        ("none", None),
        ("2t", 2 * 10**12),
    ],
)
def test_sizes_are_read_in_decimal_or_binary_units(text: str, size_bytes: int | None) -> None:
    assert parse_size(text, "max_size") == size_bytes


@pytest.mark.parametrize("text", ["eight", "8X", "-1G", ""])
def test_bad_sizes_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_size(text, "min_size")
    assert caught.value.field == "min_size"


def test_live_view_ends_with_one_line_per_slot_and_the_totals() -> None:
    stream = io.StringIO()
    view = bench_views.LiveView(stream)
    writing, finished = Slot(BY_PATH, "/dev/sdb", 1), Slot("/dev/disk/by-path/b", "/dev/sdc", 2)
    view.handle(
        StationReady(
            {
                "device_type": "raspberrypi4-64",
                "os_version": "6.5.50+rev8",
                "mapped_bytes": 36_600_000,
            },
            "/srv/cards.jsonl",
        )
    )
    view.handle(CardInserted(writing, CARD, 1))
    view.handle(CardInserted(finished, replace(CARD, path="/dev/sdc"), 2))
    view.handle(CardUpdate(writing, Progress(Phase.WRITING, 45, 100, 38.2e6, 12.0, "/dev/sdb")))
    view.handle(CardFinished(finished, _record(2)))
    view.close(StationSummary(1, 0, (_record(2),), "/srv/cards.jsonl"))
    frame = stream.getvalue().rsplit("\x1b[J", 1)[-1].splitlines()
    assert frame[0] == (
        "raspberrypi4-64 6.5.50+rev8: 36.6 MB to write per card; report /srv/cards.jsonl"
    )
    assert frame[1].startswith("slot 1") and "writing" in frame[1]
    assert "45.0%" in frame[1] and "38.2 MB/s" in frame[1] and "ETA 00:12" in frame[1]
    assert frame[2].startswith("slot 2") and "done" in frame[2] and "bench-2" in frame[2]
    assert frame[3] == "done 1   failed 0   in progress 1"
    assert frame[4] == "1 card done, 0 failed; report: /srv/cards.jsonl"
