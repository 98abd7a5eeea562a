"""The bench station on real loop devices, watched through the real udev/kernel hotplug monitor:
cards inserted, pulled mid-write, left in their slot, present at start, too small, cancelled;
and the drive policy that never offers a system drive. The slots are loop devices that take and
lose cards as a reader does (tests/support/bench.py says how).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from flasher.bench.events import (
    BenchEvent,
    CardFinished,
    CardInserted,
    CardRemoved,
    CardSkipped,
)
from flasher.bench.policy import DrivePolicy
from flasher.bench.report import ReportLog
from flasher.bench.station import PRESENT_REASON
from flasher.drives.discovery import find_drive, list_drives
from flasher.drives.monitor import DriveAction, DriveEvent, DriveMonitor
from flasher.models import Drive
from tests.support.bench import (
    WAIT_S,
    Freezer,
    MiB,
    Recorder,
    Slots,
    _assert_card_holds,
    _card_bytes,
    _finished,
    _ready,
    _running,
    _station,
    _writing,
)
from tests.support.bootcheck import file_sha256
from tests.support.helper_driver import running_helpers
from tests.support.images import BuiltImage
from tests.support.loopdev import LoopDevice


@pytest.mark.root
def test_two_cards_inserted_one_after_another_are_flashed_and_verified(
    slots: Slots, image: BuiltImage, tmp_path: Path
) -> None:
    a, b = slots.add(), slots.add()
    recorder, report = Recorder[BenchEvent](), tmp_path / "cards.jsonl"
    station = _station(image, [a, b], recorder, report, card_limit=2)
    with _running(station) as (finish, _cancel):
        recorder.wait_for(_ready, "station ready")
        slots.insert(a, _card_bytes(image))
        recorder.wait_for(_finished(a), "first card finished")
        slots.insert(b, _card_bytes(image))
        summary = finish()
    assert (summary.done, summary.failed) == (2, 0)
    records = ReportLog(report).records()
    assert [(r["device"], r["slot_number"], r["ok"], r["verified"]) for r in records] == [
        (a.path, 1, True, True),
        (b.path, 2, True, True),
    ]
    image_sha256 = file_sha256(image.path)
    for record, slot in zip(records, (a, b), strict=True):
        assert record["image_sha256"] == image_sha256
        assert record["bytes_written"] > 0 and record["error"] is None
        _assert_card_holds(slot, image, tmp_path)


class _HelperCounter:
    """Samples this process's writer helper children on a thread: the most seen at once, and
    every helper seen."""

    def __init__(self) -> None:
        self.most_at_once = 0
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            pids = {child.pid for child in running_helpers()}
            self.seen |= pids
            self.most_at_once = max(self.most_at_once, len(pids))

    def __enter__(self) -> _HelperCounter:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.root
def test_cards_inserted_together_share_the_stations_one_writer_helper(
    slots: Slots, image: BuiltImage, tmp_path: Path
) -> None:
    bench = [slots.add() for _ in range(3)]
    recorder, report = Recorder[BenchEvent](), tmp_path / "cards.jsonl"
    station = _station(image, bench, recorder, report, card_limit=3)
    with _HelperCounter() as helpers, _running(station) as (finish, _cancel):
        recorder.wait_for(_ready, "station ready")
        for slot in bench:
            slots.insert(slot, _card_bytes(image))
        summary = finish()
    assert (summary.done, summary.failed) == (3, 0)
    assert len(helpers.seen) == 1 and helpers.most_at_once == 1
    assert not any(psutil.pid_exists(pid) for pid in helpers.seen)  # stopped with the station
    for record, slot in zip(
        sorted(ReportLog(report).records(), key=lambda r: r["slot_number"]), bench, strict=True
    ):
        assert record["ok"] and record["verified"]
        _assert_card_holds(slot, image, tmp_path)


def _probe_after_removal(
    recorder: Recorder[BenchEvent], slot: LoopDevice
) -> Callable[[str], Drive | None]:
    """The station's drive lookup, except that `slot`'s card thread looks its drive up only once
    the station has taken in the pull of that slot.

    A pulled card fails on its writer's next write, at once, while the pull reaches the station
    through udev and the hotplug monitor; left to the scheduler, the card thread can finish the
    card before that, and the removal then arrives as one after the card ended. Holding the
    card's own lookup (it asks whether the card is still there before recording why it failed)
    until the removal is in makes the order the test describes, a pull seen during the write,
    the one that happens; what the station does with it is unchanged.
    """

    def probe(path: str) -> Drive | None:
        if path == slot.path and threading.current_thread().name.startswith("flasher-bench-"):
            recorder.seen(lambda e: isinstance(e, CardRemoved) and e.slot.device == path, WAIT_S)
        return find_drive(path)

    return probe


def _wait_until_blocked(thread: threading.Thread) -> None:
    """Until `thread` sleeps uninterruptibly in the kernel, or has already ended."""
    stat = Path(f"/proc/self/task/{thread.native_id}/stat")
    for _ in range(WAIT_S * 1000):
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state == "D" or not thread.is_alive():
            return
        time.sleep(0.001)
    raise AssertionError("the pull never reached the device")


@pytest.mark.root
def test_card_pulled_mid_write_fails_as_gone_while_the_other_is_verified(
    slots: Slots, freezer: Freezer, image: BuiltImage, tmp_path: Path
) -> None:
    steady, pulled = slots.add(), freezer.slot()
    recorder, report = Recorder[BenchEvent](), tmp_path / "cards.jsonl"
    station = _station(
        image,
        [steady, pulled],
        recorder,
        report,
        card_limit=2,
        probe=_probe_after_removal(recorder, pulled),
    )
    with _running(station) as (finish, _cancel):
        recorder.wait_for(_ready, "station ready")
        os.truncate(pulled.backing, _card_bytes(image))
        freezer.freeze()
        try:
            slots.insert(pulled, _card_bytes(image), grow=False)
            slots.insert(steady, _card_bytes(image))
            recorder.wait_for(_writing(pulled), "the held card writing")
            # The held card cannot progress, yet the other one finishes.
            steady_end = recorder.wait_for(_finished(steady), "the other card finished")
            # The pull waits for the held write to drain and holds every later one back, so
            # once it is waiting, the card is gone before it can write another block.
            pull = threading.Thread(target=slots.pull, args=(pulled,))
            pull.start()
            _wait_until_blocked(pull)
        finally:
            freezer.thaw()
        pull.join(WAIT_S)
        summary = finish()
    assert isinstance(steady_end, CardFinished) and steady_end.record.ok
    assert (summary.done, summary.failed) == (1, 1)
    by_device = {r["device"]: r for r in ReportLog(report).records()}
    assert by_device[steady.path]["verified"] is True
    gone = by_device[pulled.path]
    assert (gone["ok"], gone["verified"], gone["error"]["code"]) == (False, False, "drive_gone")
    assert "removed" in gone["error"]["message"]
    removed = [e for e in recorder.of(pulled) if isinstance(e, CardRemoved)]
    assert [e.during_write for e in removed] == [True]
    _assert_card_holds(steady, image, tmp_path)


@pytest.mark.root
def test_hostname_template_gives_each_card_its_own_hostname(
    slots: Slots, image: BuiltImage, tmp_path: Path
) -> None:
    bench = [slots.add(), slots.add()]
    recorder, report = Recorder[BenchEvent](), tmp_path / "cards.jsonl"
    station = _station(
        image, bench, recorder, report, template="bench-{slot}-{n:02d}", card_limit=2
    )
    with _running(station) as (finish, _cancel):
        recorder.wait_for(_ready, "station ready")
        for slot in bench:
            slots.insert(slot, _card_bytes(image))
        summary = finish()
    assert summary.failed == 0
    records = {r["device"]: r for r in ReportLog(report).records()}
    names = set()
    for slot in bench:
        record = records[slot.path]
        assert record["hostname"] == f"bench-{record['slot_number']}-{record['card']:02d}"
        assert _assert_card_holds(slot, image, tmp_path)["hostname"] == record["hostname"]
        names.add(record["hostname"])
    assert len(names) == 2
    assert records[bench[0].path]["config_sha256"] != records[bench[1].path]["config_sha256"]


class TappedMonitor:
    """The real monitor; `seen` gets each event after the station has handled it."""

    def __init__(self, seen: Callable[[DriveEvent], None]) -> None:
        self._inner = DriveMonitor(include_system=False)
        self._seen = seen

    def start(self, callback: Callable[[DriveEvent], None]) -> None:
        def both(event: DriveEvent) -> None:
            callback(event)
            self._seen(event)

        self._inner.start(both)

    def close(self) -> None:
        self._inner.close()


def _set_read_only(slot: LoopDevice, read_only: bool) -> None:
    subprocess.run(["blockdev", "--setro" if read_only else "--setrw", slot.path], check=True)
    Path("/sys/block", slot.name, "uevent").write_text("change")


@pytest.mark.root
def test_flashed_card_left_in_its_slot_is_flashed_again_only_when_reinserted(
    slots: Slots, image: BuiltImage, tmp_path: Path
) -> None:
    slot = slots.add()
    recorder: Recorder[BenchEvent] = Recorder()
    handled: Recorder[DriveEvent] = Recorder()
    station = _station(
        image,
        [slot],
        recorder,
        tmp_path / "cards.jsonl",
        card_limit=2,
        watcher=lambda: TappedMonitor(handled),
    )

    def changed_to(read_only: bool) -> Callable[[DriveEvent], bool]:
        return lambda e: (
            e.action is DriveAction.CHANGE
            and e.drive.path == slot.path
            and e.drive.read_only is read_only
        )

    with _running(station) as (finish, _cancel):
        recorder.wait_for(_ready, "station ready")
        slots.insert(slot, _card_bytes(image))
        recorder.wait_for(_finished(slot), "first card finished")
        # The same card, still inserted, changes (its lock switch, say): no new flash.
        _set_read_only(slot, True)
        handled.wait_for(changed_to(True), "the change handled")
        _set_read_only(slot, False)
        handled.wait_for(changed_to(False), "the change back handled")
        slots.pull(slot)
        recorder.wait_for(lambda e: isinstance(e, CardRemoved), "card removed")
        slots.insert(slot, _card_bytes(image))
        summary = finish()
    kinds = [
        type(e).__name__
        for e in recorder.of(slot)
        if isinstance(e, CardInserted | CardFinished | CardRemoved)
    ]
    assert kinds == ["CardInserted", "CardFinished", "CardRemoved", "CardInserted", "CardFinished"]
    assert [r.card for r in summary.records] == [1, 2]
    assert all(r.ok for r in summary.records)


@pytest.mark.root
def test_card_present_at_start_is_flashed_only_after_reinsertion(
    slots: Slots, image: BuiltImage, tmp_path: Path
) -> None:
    slot = slots.add()
    slots.insert(slot, _card_bytes(image))
    recorder = Recorder[BenchEvent]()
    station = _station(image, [slot], recorder, tmp_path / "cards.jsonl", card_limit=1)
    with _running(station) as (finish, _cancel):
        skipped = recorder.wait_for(
            lambda e: isinstance(e, CardSkipped) and e.slot.device == slot.path,
            "present card skipped",
        )
        recorder.wait_for(_ready, "station ready")
        slots.pull(slot)
        recorder.wait_for(lambda e: isinstance(e, CardRemoved), "card removed")
        slots.insert(slot, _card_bytes(image))
        summary = finish()
    assert isinstance(skipped, CardSkipped) and skipped.reason == PRESENT_REASON
    assert [(r.device, r.ok) for r in summary.records] == [(slot.path, True)]


@pytest.mark.root
def test_too_small_card_is_recorded_as_rejected_and_left_untouched(
    slots: Slots, image: BuiltImage, tmp_path: Path
) -> None:
    slot = slots.add()
    recorder = Recorder[BenchEvent]()
    station = _station(image, [slot], recorder, tmp_path / "cards.jsonl", card_limit=1)
    small_bytes = 16 * MiB
    with _running(station) as (finish, _cancel):
        recorder.wait_for(_ready, "station ready")
        with open(slot.backing, "wb") as f:
            f.write(b"\xa5" * small_bytes)
        slots.insert(slot, small_bytes, grow=False)
        summary = finish()
    (record,) = summary.records
    assert (record.ok, record.error_code, record.bytes_written) == (False, "drive_rejected", 0)
    assert "too small" in (record.error_message or "")
    assert slot.backing.read_bytes() == b"\xa5" * small_bytes


@pytest.mark.root
def test_cancel_stops_a_card_mid_write_and_records_it_cancelled(
    slots: Slots, freezer: Freezer, image: BuiltImage, tmp_path: Path
) -> None:
    slot = freezer.slot()
    recorder = Recorder[BenchEvent]()
    station = _station(image, [slot], recorder, tmp_path / "cards.jsonl")
    with _running(station) as (finish, cancel):
        recorder.wait_for(_ready, "station ready")
        with open(slot.backing, "wb") as f:
            f.write(b"\xa5" * _card_bytes(image))
        freezer.freeze()
        try:
            slots.insert(slot, _card_bytes(image), grow=False)
            recorder.wait_for(_writing(slot), "the card writing")
            cancel.cancel()
        finally:
            freezer.thaw()
        summary = finish()
    (record,) = summary.records
    assert (record.ok, record.error_code) == (False, "cancelled")
    assert slot.read(0, MiB) == bytes(MiB)  # left unbootable


def test_real_system_drives_and_internal_disks_are_never_offered() -> None:
    everything = DrivePolicy(
        slots=("*",), buses=frozenset({"usb", "mmc", "loop", "ata", "scsi"}), max_size_bytes=None
    )
    drives = list_drives(all=True)
    if not any(d.system or d.internal for d in drives):
        pytest.skip("this machine shows no system drive or internal disk to test with")
    offered = everything.offered(drives)
    assert not [d.path for d in offered if d.system or d.internal]
    assert {
        d.path for d in drives if not (d.system or d.internal) and d.bus in ("loop", "usb", "mmc")
    } <= {d.path for d in offered}
