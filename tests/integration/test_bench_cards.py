"""The bench's card steps on real loop-device cards: every card registered as its own device of
a sandbox fleet (its config.json carries that device), a device left unflashed by a failed card
reused by the next one, and a fake-capacity card refused before anything is registered."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flasher.balena.session import BalenaSession
from flasher.bench.cardsteps import CardSteps, UnflashedDevices, unflashed_devices
from flasher.bench.events import BenchEvent, CardFinished
from flasher.bench.image import BenchJob
from flasher.bench.policy import DrivePolicy
from flasher.bench.report import ReportLog
from flasher.bench.station import Station
from flasher.cache import ImageCache
from flasher.models import DeviceConfig, Secret
from flasher.provider import ImageProvider, SourceSpec
from flasher.sandbox.server import SandboxServer
from tests.support.bench import (
    Recorder,
    Slots,
    _assert_card_holds,
    _card_bytes,
    _finished,
    _ready,
    _running,
)
from tests.support.bootcheck import file_sha256, mtype
from tests.support.images import BuiltImage
from tests.support.loopdev import LoopDevice

FLEET = 1958513
MiB = 1024 * 1024


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer.start() as server:
        yield server


def _station(
    image: BuiltImage,
    bench: list[LoopDevice],
    recorder: Recorder[BenchEvent],
    report: Path,
    steps: CardSteps,
    *,
    key: str,
    template: str | None = None,
    cards: int,
) -> Station:
    job = BenchJob(
        SourceSpec(path=str(image.path)),
        config=DeviceConfig(
            device_type=image.device_type, fleet_id=FLEET, provisioning_key=Secret(key)
        ),
        hostname_template=template,
        expected_sha256=file_sha256(image.path),  # a raw image proves nothing on its own
    )
    return Station(
        job,
        ImageProvider(ImageCache(report.parent / "cache")),
        policy=DrivePolicy(slots=tuple(s.path for s in bench), buses=frozenset({"loop"})),
        report=ReportLog(report),
        on_event=recorder,
        card_limit=cards,
        card_steps=steps,
    )


def _listed(sandbox: SandboxServer) -> set[str]:
    with BalenaSession(sandbox.url, Secret("login")) as session:
        return {row["uuid"] for row in session.pine_get("device", {"$select": ["uuid"]})}


def _run_cards(
    slots: Slots,
    station: Station,
    recorder: Recorder[BenchEvent],
    bench: list[LoopDevice],
    size_bytes: int,
) -> list[dict[str, Any]]:
    with _running(station) as (finish, _cancel):
        recorder.wait_for(_ready, "station ready")
        for slot in bench:
            slots.insert(slot, size_bytes)
            recorder.wait_for(_finished(slot), "card result")
        finish()
    assert station.report is not None
    return station.report.records()


@pytest.mark.root
def test_two_cards_become_two_devices_the_api_lists(
    slots: Slots, image: BuiltImage, sandbox: SandboxServer, tmp_path: Path
) -> None:
    bench = [slots.add(), slots.add()]
    key = sandbox.registrations.new_provisioning_key(FLEET)
    steps = CardSteps(register_session=BalenaSession(sandbox.url, None))
    report = tmp_path / "cards.jsonl"
    recorder: Recorder[BenchEvent] = Recorder()
    station = _station(image, bench, recorder, report, steps, key=key, cards=2)
    records = _run_cards(slots, station, recorder, bench, _card_bytes(image))
    assert all(r["ok"] and r["device_state"] == "flashed" for r in records)
    uuids = {r["device_uuid"] for r in records}
    assert len(uuids) == 2 and uuids <= _listed(sandbox)
    for slot in bench:
        config = _assert_card_holds(slot, image, tmp_path)
        (record,) = [r for r in records if r["device"] == slot.path]
        assert config["uuid"] == record["device_uuid"]
        assert "apiKey" not in config
        assert sandbox.registrations.holds_key(config["uuid"], config["deviceApiKey"])
        assert config["deviceApiKey"] not in report.read_text()
        assert record["capacity_bytes"] == _card_bytes(image)  # probed, honest


@pytest.mark.root
def test_device_of_a_failed_card_is_reused_by_the_next_card(
    slots: Slots, image: BuiltImage, sandbox: SandboxServer, tmp_path: Path
) -> None:
    bench = [slots.add()]
    key = sandbox.registrations.new_provisioning_key(FLEET)
    report = tmp_path / "cards.jsonl"
    # A loop device has no serial: the card fails after its device was registered.
    recorder: Recorder[BenchEvent] = Recorder()
    failing = _station(
        image,
        bench,
        recorder,
        report,
        CardSteps(probe_capacity=False, register_session=BalenaSession(sandbox.url, None)),
        key=key,
        template="kiosk-{serial}",
        cards=1,
    )
    (failed,) = _run_cards(slots, failing, recorder, bench, _card_bytes(image))
    assert not failed["ok"] and failed["device_state"] == "registered_unflashed"
    assert unflashed_devices(ReportLog(report).records()) == [failed]
    slots.pull(bench[0])

    steps = CardSteps(
        probe_capacity=False,
        register_session=BalenaSession(sandbox.url, Secret("login")),
        reuse=UnflashedDevices(ReportLog(report).records()),
    )
    recorder = Recorder()
    reusing = _station(image, bench, recorder, report, steps, key=key, cards=1)
    records = _run_cards(slots, reusing, recorder, bench, _card_bytes(image))
    assert records[-1]["ok"] and records[-1]["device_uuid"] == failed["device_uuid"]
    config = json.loads(mtype(bench[0].backing, image.boot.start_bytes, "/config.json"))
    assert sandbox.registrations.holds_key(failed["device_uuid"], config["deviceApiKey"])
    assert unflashed_devices(ReportLog(report).records()) == []


@pytest.mark.root
def test_fake_capacity_card_is_refused_before_a_device_is_registered(
    slots: Slots, image: BuiltImage, sandbox: SandboxServer, tmp_path: Path
) -> None:
    medium = slots.loops.tmpfs(6 * MiB)
    bench = [slots.add(backing_dir=medium)]
    key = sandbox.registrations.new_provisioning_key(FLEET)
    steps = CardSteps(register_session=BalenaSession(sandbox.url, None))
    recorder: Recorder[BenchEvent] = Recorder()
    station = _station(image, bench, recorder, tmp_path / "cards.jsonl", steps, key=key, cards=1)
    before = _listed(sandbox)
    with _running(station) as (finish, _cancel):
        recorder.wait_for(_ready, "station ready")
        # The medium fills up before the card is seen: only `stored` bytes hold data.
        os.truncate(bench[0].backing, 256 * MiB)
        stored = _fill_until_full(bench[0].backing)
        slots.insert(bench[0], 256 * MiB, grow=False)
        recorder.wait_for(_finished(bench[0]), "card result")
        finish()
    (result,) = [e for e in recorder.events if isinstance(e, CardFinished)]
    record = result.record
    assert record.error_code == "counterfeit"
    assert record.capacity_bytes == stored
    assert record.device_uuid is None and _listed(sandbox) == before


def _fill_until_full(backing: Path) -> int:
    chunk = b"\xa5" * (64 * 1024)
    stored = 0
    with open(backing, "r+b", buffering=0) as f:
        try:
            while True:
                stored += f.write(chunk) or 0
        except OSError:
            pass
    return stored
