"""A station file as a new user writes it, run on real loop-device cards: named slots in
`[[slots]]` tables, a hostname from `{slot}`, `{date}` and `{n}`, `eject = true`, and one of the
two cards a fake-capacity card (its medium, a small tmpfs, is full past its first MiBs). The
names reach the events and the report lines; the loop devices are never powered off."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from flasher.bench.report import ReportLog
from flasher.cli.main import main
from tests.conftest import ImageFactory
from tests.integration.test_bench_cards import _fill_until_full
from tests.support.bench import Slots, _card_bytes
from tests.support.bootcheck import file_sha256
from tests.support.images import BuiltImage
from tests.support.loopdev import LoopDevices, require_loop

MiB = 1024 * 1024


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def no_power_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `udisksctl` on PATH that records any call: a loop device must never reach it."""
    tools = tmp_path / "bin"
    tools.mkdir()
    log = tmp_path / "power-off-calls"
    tool = tools / "udisksctl"
    tool.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.mark.root
def test_station_file_with_named_slots_catches_the_fake_card(
    mbr_image: ImageFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_power_off: Path,
) -> None:
    require_loop()
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    image: BuiltImage = mbr_image()
    report = tmp_path / "cards.jsonl"
    day = dt.datetime.now(dt.UTC).date()
    with LoopDevices(tmp_path) as loops:
        slots = Slots(loops)
        honest = slots.add()
        fake = slots.add(backing_dir=loops.tmpfs(6 * MiB))
        slots.insert(honest, _card_bytes(image))
        os.truncate(fake.backing, 256 * MiB)
        stored = _fill_until_full(fake.backing)
        slots.insert(fake, 256 * MiB, grow=False)
        station = tmp_path / "station.toml"
        station.write_text(
            f'[image]\nsource = "{image.path}"\nsha256 = "{file_sha256(image.path)}"\n'
            f'[config]\nhostname-template = "kiosk-{{slot}}-{{date}}-{{n}}"\n'
            f'[cards]\nbus = ["loop"]\ninclude-present = true\neject = true\n'
            f'once = 2\nyes = true\nreport = "{report}"\n'
            f'[[slots]]\nname = "left"\npath = "{honest.path}"\n'
            f'[[slots]]\nname = "right"\npath = "{fake.path}"\n'
        )
        code = main(["--json", "bench", "--station", str(station)])
    events = _json_lines(capsys.readouterr().out)
    assert code == 1, events[-3:]  # one card failed: the fake
    by_slot = {r["slot_name"]: r for r in ReportLog(report).records()}
    left, right = by_slot["left"], by_slot["right"]
    assert left["verified"] and left["slot_number"] == 1
    assert left["hostname"] in {
        f"kiosk-left-{d:%Y%m%d}-{left['card']}" for d in (day, dt.datetime.now(dt.UTC).date())
    }
    assert left["ejected"] is False  # a loop device has nothing to power off
    assert right["error"]["code"] == "counterfeit" and right["capacity_bytes"] == stored
    assert f"holds only {stored / 1e6:.1f} MB" in right["error"]["message"]
    assert right["slot_number"] == 2 and right["ejected"] is False
    inserted = {e["slot_name"]: e["device"] for e in events if e["event"] == "card_inserted"}
    assert inserted == {"left": honest.path, "right": fake.path}
    assert not no_power_off.exists()
