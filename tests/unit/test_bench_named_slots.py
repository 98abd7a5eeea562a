"""Named slots, the {date} template field and powering off verified cards, without devices:
how `NAME=PATTERN` and `[[slots]]` tables are read, what `{slot}` and `{date}` give, which
settings are refused before any I/O, and which cards the bench powers off (a stand-in
`udisksctl` on PATH answers like the real one, since nothing can be powered off here)."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import stat
from pathlib import Path

import pytest

from flasher.bench.cardsteps import CardSteps
from flasher.bench.events import CardUpdate
from flasher.bench.image import CardFacts, check_hostname_template, render_hostname
from flasher.bench.policy import DrivePolicy, Slot, SlotPattern
from flasher.bench.report import CardRecord
from flasher.cli import bench_views
from flasher.cli.main import build_parser
from flasher.cli.station_file import load_station
from flasher.errors import ConfigError
from flasher.events import CancelToken, Event, Log
from flasher.models import Drive

BY_PATH = "/dev/disk/by-path/pci-0000:00:14.0-usb-0:1.2:1.0-scsi-0:0:0:0"
CARD = Drive("/dev/sdb", 32 * 10**9, bus="usb", serial="AA01", by_path=(BY_PATH,))
LOOP = Drive("/dev/loop7", 32 * 10**9, bus="loop")
DAY = dt.date(2026, 3, 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("left=*usb-0:1.2:*", SlotPattern("*usb-0:1.2:*", "left")),
        ("A1=/dev/sdb", SlotPattern("/dev/sdb", "A1")),
        ("*usb-0:1.2:*", SlotPattern("*usb-0:1.2:*")),
        ("/dev/disk/by-path/x=y", SlotPattern("/dev/disk/by-path/x=y")),
    ],
    ids=["named-glob", "named-path", "bare", "not-a-name"],
)
def test_slot_option_names_a_slot_before_the_equals_sign(text: str, expected: SlotPattern) -> None:
    assert SlotPattern.parse(text) == expected


def test_named_slot_carries_its_name_and_number() -> None:
    policy = DrivePolicy(
        slots=(SlotPattern("*usb-0:1.1:*", "left"), SlotPattern("*usb-0:1.2:*", "right"))
    )
    assert policy.slot_of(CARD) == Slot(BY_PATH, "/dev/sdb", 2, "right")
    assert policy.slot_of(CARD).label == "slot right"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("slots", "rule"),
    [
        ((SlotPattern("sdb", "left"), SlotPattern("sdc", "Left")), "given to two slots"),
        ((SlotPattern("sdb", "my slot"),), "is not 1 to 32"),
        ((SlotPattern(" ", "left"),), "is empty"),
    ],
    ids=["duplicate", "bad-name", "empty-pattern"],
)
def test_bad_slot_names_are_refused(slots: tuple[SlotPattern, ...], rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DrivePolicy(slots=slots)
    assert caught.value.field == "slot" and rule in caught.value.rule


def _facts(slot: Slot) -> CardFacts:
    return CardFacts(n=7, slot=slot, drive=CARD, date=DAY)


@pytest.mark.parametrize(
    ("template", "slot", "hostname"),
    [
        ("kiosk-{slot}-{n}", Slot(BY_PATH, "/dev/sdb", 2, "Left_A"), "kiosk-left-a-7"),
        ("kiosk-{slot}-{n}", Slot(BY_PATH, "/dev/sdb", 2), "kiosk-2-7"),
        ("kiosk-{date}-{n:03d}", Slot(BY_PATH, "/dev/sdb", 2), "kiosk-20260302-007"),
        ("k{date}-{serial}", Slot(BY_PATH, "/dev/sdb"), "k20260302-aa01"),
    ],
    ids=["slot-name", "slot-number", "date", "date-serial"],
)
def test_template_fields_fill_in_the_card(template: str, slot: Slot, hostname: str) -> None:
    check_hostname_template(template, numbered_slots=True, slot_titles=[slot.title])
    assert render_hostname(template, _facts(slot)) == hostname


def test_date_is_the_cards_utc_day_by_default() -> None:
    before = dt.datetime.now(dt.UTC).date()
    facts = CardFacts(n=1, slot=Slot(BY_PATH, "/dev/sdb"), drive=CARD)
    after = dt.datetime.now(dt.UTC).date()
    assert facts.date in {before, after}


@pytest.mark.parametrize(
    ("template", "rule"),
    [
        ("kiosk-{day}-{n}", "uses {day}"),
        ("kiosk-{date}", "cards would share one name"),
    ],
    ids=["unknown-field", "date-alone"],
)
def test_bad_template_fields_are_refused_naming_them(template: str, rule: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_hostname_template(template, numbered_slots=True)
    assert caught.value.field == "hostname_template" and rule in caught.value.rule


def test_slot_name_that_makes_a_bad_hostname_is_refused_up_front() -> None:
    with pytest.raises(ConfigError) as caught:
        check_hostname_template("{slot}", numbered_slots=True, slot_titles=["left", "..."])
    assert caught.value.field == "hostname"


def _parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = build_parser(["bench"]).parse_args(["bench"]).bench_parser
    return parser


def _station(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_station_file_slot_tables_become_named_slots(tmp_path: Path) -> None:
    path = _station(
        tmp_path,
        'eject = true\n[[slots]]\nname = "left"\npath = "*usb-0:1.1:*"\n'
        '[[slots]]\nname = "right"\npattern = "/dev/sdc"\n',
    )
    values = load_station(path, _parser())
    assert values["slots"] == ["left=*usb-0:1.1:*", "right=/dev/sdc"]
    assert values["eject"] is True
    assert [SlotPattern.parse(s).name for s in values["slots"]] == ["left", "right"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[[slots]]\nname = "left"\n', "station:slots[0].path"),
        ('[[slots]]\nname = "a b"\npath = "sdb"\n', "station:slots[0].name"),
        ('[[slots]]\nname = "a"\npath = "sdb"\ncolour = "red"\n', "station:slots[0].colour"),
        ('slot = ["sdb"]\n[[slots]]\nname = "a"\npath = "sdc"\n', "station:slots"),
        ('eject = "yes"\n', "station:eject"),
    ],
    ids=["no-path", "bad-name", "unknown-key", "repeated", "eject-not-bool"],
)
def test_bad_slot_tables_are_refused_naming_the_key(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_station(_station(tmp_path, text), _parser())
    assert caught.value.field == field


@pytest.fixture
def udisksctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Powers off /dev/sdb and refuses anything else, with a message, as udisksctl does."""
    tool = tmp_path / "udisksctl"
    log = tmp_path / "calls"
    tool.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\n[ "$4" = /dev/sdb ] && exit 0\n'
        'echo "Error powering off drive: busy" >&2\nexit 1\n'
    )
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return log


def _record(drive: Drive, *, ok: bool = True, verified: bool = True) -> CardRecord:
    return CardRecord(
        timestamp="2026-03-02T10:00:00+00:00",
        card=1,
        slot=drive.path,
        slot_number=1,
        device=drive.path,
        serial=None,
        vendor=None,
        model=None,
        size_bytes=drive.size_bytes,
        image_sha256=None,
        device_type=None,
        os_version=None,
        config_sha256=None,
        hostname=None,
        ok=ok,
        verified=verified,
        bytes_written=1,
        seconds=1.0,
        write_seconds=1.0,
        written_sha256=None,
    )


def _after(drive: Drive, record: CardRecord, events: list[Event]) -> CardRecord:
    steps = CardSteps(probe_capacity=False, eject=True)
    return steps.after(record, drive, on_event=events.append, cancel=CancelToken())


def test_verified_card_is_powered_off_and_its_record_says_so(udisksctl: Path) -> None:
    events: list[Event] = []
    record = _after(CARD, _record(CARD), events)
    assert record.ejected is True and record.to_dict()["ejected"] is True
    assert udisksctl.read_text() == "power-off --no-user-interaction -b /dev/sdb\n"
    assert events == [Log("info", "powered off; the card can be pulled out", "/dev/sdb")]


@pytest.mark.parametrize(
    ("drive", "ok", "verified"),
    [(CARD, False, False), (CARD, True, False), (LOOP, True, True)],
    ids=["failed", "unverified", "loop-device"],
)
def test_card_is_not_powered_off_unless_verified_and_real(
    udisksctl: Path, drive: Drive, ok: bool, verified: bool
) -> None:
    record = _after(drive, _record(drive, ok=ok, verified=verified), [])
    assert record.ejected is False
    assert not udisksctl.exists()


def test_card_that_refuses_to_power_off_is_reported_with_the_reason(udisksctl: Path) -> None:
    other = Drive("/dev/sdc", 32 * 10**9, bus="usb")
    events: list[Event] = []
    record = _after(other, _record(other), events)
    assert record.ejected is False
    assert events == [
        Log(
            "warning",
            "not powered off: udisksctl failed: Error powering off drive: busy",
            "/dev/sdc",
        )
    ]


def test_record_without_eject_says_nothing_about_it() -> None:
    steps = CardSteps(probe_capacity=False)
    assert not steps.after_write
    assert _record(CARD).to_dict()["ejected"] is None


def test_plain_view_says_why_a_card_was_not_powered_off() -> None:
    stream = io.StringIO()
    slot = Slot(BY_PATH, "/dev/sdb", 1, "left")
    view = bench_views.LogView(stream)
    view.handle(CardUpdate(slot, Log("warning", "not powered off: udisksctl failed", "/dev/sdb")))
    view.handle(CardUpdate(slot, Log("info", "opened /dev/sdb (direct I/O)", "/dev/sdb")))
    assert stream.getvalue() == "slot left: not powered off: udisksctl failed\n"
