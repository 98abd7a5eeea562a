"""The bench station on real loop devices, watched through the real udev/kernel hotplug monitor.

A bench slot here is a loop device over an empty backing file: no card, size 0, which discovery
does not list (as a card reader with an empty slot). Inserting a card gives the file a size and
tells the kernel (LOOP_SET_CAPACITY plus a "change" uevent, what a reader's media change does);
pulling it shrinks the file to nothing the same way, so writes in flight fail and the monitor
reports the removal. `losetup -d` cannot stand in for a pull: on a device held open it only
schedules the detach for the last close, and the write carries on. To pull a card provably in
the middle of its write, its backing file sits on an ext4 filesystem that the test freezes
(FIFREEZE): the writer blocks on its first write until the test thaws it and pulls the card in
the same instant.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

from flasher.bench.events import (
    BenchEvent,
    CardFinished,
    CardInserted,
    CardRemoved,
    CardSkipped,
    CardUpdate,
    StationReady,
)
from flasher.bench.image import BenchJob
from flasher.bench.policy import DrivePolicy
from flasher.bench.report import ReportLog
from flasher.bench.station import PRESENT_REASON, DriveWatcher, Station, StationSummary
from flasher.cache import ImageCache
from flasher.cli.main import main
from flasher.drives.discovery import find_drive, list_drives
from flasher.drives.monitor import DriveAction, DriveEvent, DriveMonitor
from flasher.events import CancelToken, Phase, PhaseChanged
from flasher.image.bmap import write_bmap
from flasher.models import DeviceConfig, Drive
from flasher.provider import ImageProvider, SourceSpec
from tests.conftest import ImageFactory
from tests.support.bootcheck import file_sha256, fsck_boot, mtype, region_sha256
from tests.support.images import BuiltImage
from tests.support.loopdev import LoopDevice, LoopDevices, require_loop

MiB = 1024 * 1024
WAIT_S = 60  # a guard against a hang, never a measurement
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
LOOP_SET_CAPACITY = 0x4C07
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_INFO64_BYTES = 232  # struct loop_info64
LO_OFFSET_AT = 24  # its lo_offset field
PULLED_OFFSET = 1 << 50
WIFI_KEY = "bench-secret-passphrase"
E = TypeVar("E")


class Slots:
    """Card-reader slots made of loop devices (see the module docstring)."""

    def __init__(self, loops: LoopDevices) -> None:
        self.loops = loops

    def add(self, backing_dir: Path | None = None) -> LoopDevice:
        return self.loops.create(0, backing_dir=backing_dir)

    def insert(self, slot: LoopDevice, size_bytes: int, *, grow: bool = True) -> None:
        if grow:
            os.truncate(slot.backing, size_bytes)
        self._set_offset(slot, 0)
        self._ioctl(slot, LOOP_SET_CAPACITY, 0)
        self._media_changed(slot)

    def pull(self, slot: LoopDevice) -> None:
        """The medium goes at once: the loop device starts past the end of its file, so it
        holds nothing (whatever a write in flight does to the file) until re-inserted."""
        self._set_offset(slot, PULLED_OFFSET)
        self._media_changed(slot)

    @staticmethod
    def _ioctl(slot: LoopDevice, request: int, arg: int | bytes | bytearray) -> None:
        fd = os.open(slot.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, request, arg)
        finally:
            os.close(fd)

    def _set_offset(self, slot: LoopDevice, offset: int) -> None:
        status = bytearray(LOOP_INFO64_BYTES)
        self._ioctl(slot, LOOP_GET_STATUS64, status)
        struct.pack_into("=Q", status, LO_OFFSET_AT, offset)
        self._ioctl(slot, LOOP_SET_STATUS64, bytes(status))

    @staticmethod
    def _media_changed(slot: LoopDevice) -> None:
        Path("/sys/block", slot.name, "uevent").write_text("change")


class Recorder(Generic[E]):
    """Collects events (the station's, or the monitor's); `wait_for` blocks until one matches."""

    def __init__(self) -> None:
        self.events: list[E] = []
        self._changed = threading.Condition()

    def __call__(self, event: E) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, matches: Callable[[E], bool], what: str) -> E:
        assert self.seen(matches, WAIT_S), f"no {what} among {self.events}"
        with self._changed:
            return next(e for e in self.events if matches(e))

    def seen(self, matches: Callable[[E], bool], timeout_s: float) -> bool:
        """Whether an event matching `matches` arrives within `timeout_s` (or already has)."""
        with self._changed:
            return self._changed.wait_for(lambda: any(map(matches, self.events)), timeout_s)

    def of(self, slot: LoopDevice) -> list[E]:
        with self._changed:
            return [
                e
                for e in self.events
                if getattr(getattr(e, "slot", None), "device", None) == slot.path
            ]


def _finished(slot: LoopDevice) -> Callable[[BenchEvent], bool]:
    return lambda e: isinstance(e, CardFinished) and e.slot.device == slot.path


def _writing(slot: LoopDevice) -> Callable[[BenchEvent], bool]:
    return lambda e: (
        isinstance(e, CardUpdate)
        and e.slot.device == slot.path
        and e.event == PhaseChanged(Phase.WRITING, slot.path)
    )


def _ready(e: BenchEvent) -> bool:
    return isinstance(e, StationReady)


@pytest.fixture
def slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Slots]:
    require_loop()
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    with LoopDevices(tmp_path) as loops:
        yield Slots(loops)


@pytest.fixture
def image(mbr_image: ImageFactory) -> BuiltImage:
    return mbr_image()


def _card_bytes(image: BuiltImage) -> int:
    return image.size_bytes + 8 * MiB


def _station(
    image: BuiltImage,
    bench: list[LoopDevice],
    recorder: Recorder[BenchEvent],
    report: Path,
    *,
    template: str | None = None,
    watcher: Callable[[], DriveWatcher] | None = None,
    **options: Any,
) -> Station:
    job = BenchJob(
        SourceSpec(path=str(image.path)),
        config=DeviceConfig(device_type=image.device_type),
        hostname_template=template,
        expected_sha256=file_sha256(image.path),  # a raw image proves nothing on its own
    )
    extra: dict[str, Any] = {"watcher": watcher} if watcher is not None else {}
    return Station(
        job,
        ImageProvider(ImageCache(report.parent / "cache")),
        policy=DrivePolicy(slots=tuple(s.path for s in bench), buses=frozenset({"loop"})),
        report=ReportLog(report),
        on_event=recorder,
        **options,
        **extra,
    )


@contextlib.contextmanager
def _running(station: Station) -> Iterator[tuple[Callable[[], StationSummary], CancelToken]]:
    """The station on a thread; yields (wait for its summary, its cancel token)."""
    cancel = CancelToken()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["summary"] = station.run(cancel)
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def finish() -> StationSummary:
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the station did not stop"
        if "error" in box:
            raise box["error"]
        summary: StationSummary = box["summary"]
        return summary

    try:
        yield finish, cancel
    finally:
        cancel.cancel()
        thread.join(WAIT_S)


def _assert_card_holds(slot: LoopDevice, image: BuiltImage, scratch: Path) -> dict[str, Any]:
    """The card holds the image outside the boot partition, a clean boot FAT, and a
    config.json for the image's device type, which is returned."""
    card, boot = slot.backing, image.boot
    end = boot.start_bytes + boot.size_bytes
    assert region_sha256(card, 0, boot.start_bytes) == region_sha256(
        image.path, 0, boot.start_bytes
    )
    assert region_sha256(card, end, image.size_bytes) == region_sha256(
        image.path, end, image.size_bytes
    )
    fsck_boot(card, boot.start_bytes, boot.size_bytes, scratch)
    config: dict[str, Any] = json.loads(mtype(card, boot.start_bytes, "/config.json"))
    assert config["deviceType"] == image.device_type
    return config


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


class Freezer:
    """A directory on its own ext4 filesystem whose writes can be held (FIFREEZE) and let go;
    `slot()` makes a bench slot whose cards live there."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        holder = slots.loops.create(256 * MiB)
        subprocess.run(["mkfs.ext4", "-q", holder.path], check=True, capture_output=True)
        self.directory = Path(slots.loops.mount(holder.path))
        self._fd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
        self._on_it: list[LoopDevice] = []

    def slot(self) -> LoopDevice:
        slot = self._slots.add(self.directory)
        self._on_it.append(slot)
        return slot

    def freeze(self) -> None:
        try:
            fcntl.ioctl(self._fd, FIFREEZE, 0)
        except OSError as err:
            pytest.skip(f"cannot freeze ext4 here: {err.strerror}")

    def thaw(self) -> None:
        try:
            fcntl.ioctl(self._fd, FITHAW, 0)
        except OSError as err:
            if err.errno != errno.EINVAL:  # EINVAL: it was not frozen
                raise

    def close(self) -> None:
        """Thaw, let go of the slots on the filesystem and unmount it, so that the loop
        fixture can detach its device at once."""
        self.thaw()
        os.close(self._fd)
        for slot in self._on_it:
            self._slots.loops.detach(slot)
        for _ in range(WAIT_S * 100):
            done = subprocess.run(["umount", str(self.directory)], capture_output=True)
            if done.returncode == 0 or not os.path.ismount(self.directory):
                return
            time.sleep(0.01)  # a detached loop device lets go of its file a moment later


@pytest.fixture
def freezer(slots: Slots) -> Iterator[Freezer]:
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 not installed")
    held = Freezer(slots)
    try:
        yield held
    finally:
        held.close()


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


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.root
def test_bench_command_flashes_a_card_and_prints_json_lines_without_secrets(
    slots: Slots,
    image: BuiltImage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASHER_WIFI_KEY", WIFI_KEY)
    slot = slots.add()
    slots.insert(slot, _card_bytes(image))
    report = tmp_path / "cards.jsonl"
    code = main(
        [
            "--json",
            "bench",
            str(image.path),
            "--sha256",
            file_sha256(image.path),
            "--hostname-template",
            "kiosk-{n}",
            "--wifi-ssid",
            "Bench Net",
            "--slot",
            slot.path,
            "--bus",
            "loop",
            "--include-present",
            "--once",
            "1",
            "--yes",
            "--report",
            str(report),
        ]
    )
    captured = capsys.readouterr()
    events = _json_lines(captured.out)
    assert code == 0, events[-3:]
    kinds = [e["event"] for e in events]
    for kind in ("station_ready", "card_inserted", "card_result", "summary"):
        assert kind in kinds
    result = next(e for e in events if e["event"] == "card_result")
    assert (result["device"], result["hostname"], result["verified"]) == (
        slot.path,
        "kiosk-1",
        True,
    )
    assert any(e["event"] == "progress" and e.get("slot") == slot.path for e in events)
    assert events[-1] == {"event": "summary", "done": 1, "failed": 0, "report": str(report)}
    assert ReportLog(report).records()[0]["hostname"] == "kiosk-1"
    assert _assert_card_holds(slot, image, tmp_path)["hostname"] == "kiosk-1"
    keyfile = mtype(slot.backing, image.boot.start_bytes, "/system-connections/resin-wifi")
    assert WIFI_KEY.encode() in keyfile
    for text in (captured.out, captured.err, report.read_text()):
        assert WIFI_KEY not in text


def test_bench_command_needs_consent_to_erase_cards(
    image: BuiltImage, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--json", "bench", str(image.path), "--report", str(tmp_path / "r.jsonl")])
    (error,) = _json_lines(capsys.readouterr().out)
    assert code == 1 and error["event"] == "error"
    assert "--yes" in error["hint"]


def test_bench_command_refuses_hostname_with_a_template_before_any_io(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "--json",
            "bench",
            str(tmp_path / "missing.img"),
            "--hostname",
            "one",
            "--hostname-template",
            "bench-{n}",
            "--yes",
        ]
    )
    (error,) = _json_lines(capsys.readouterr().out)
    assert code == 2 and error["code"] == "invalid_config"


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


@pytest.mark.root
def test_first_ctrl_c_lets_the_card_being_written_finish(
    slots: Slots, freezer: Freezer, image: BuiltImage, tmp_path: Path
) -> None:
    slot = freezer.slot()
    os.truncate(slot.backing, _card_bytes(image))
    report = tmp_path / "cards.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flasher",
            "--json",
            "bench",
            str(image.path),
            "--sha256",
            file_sha256(image.path),
            "--slot",
            slot.path,
            "--bus",
            "loop",
            "--yes",
            "--report",
            str(report),
            # The frozen filesystem must hold up the card's write, not the probe before it.
            "--no-probe-capacity",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines = iter(proc.stdout)
    try:
        _read_until(lines, lambda e: e["event"] == "station_ready")
        freezer.freeze()
        try:
            slots.insert(slot, _card_bytes(image), grow=False)
            _read_until(
                lines,
                lambda e: (
                    e["event"] == "phase" and e["phase"] == "writing" and e["target"] == slot.path
                ),
            )
            proc.send_signal(signal.SIGINT)
            _read_until(lines, lambda e: e["event"] == "log" and "no more cards" in e["message"])
        finally:
            freezer.thaw()
        rest, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = _json_lines(rest)
    assert proc.returncode == 130, (events[-3:], err)
    (result,) = [e for e in events if e["event"] == "card_result"]
    assert (result["ok"], result["verified"]) == (True, True)
    assert events[-1] == {"event": "summary", "done": 1, "failed": 0, "report": str(report)}


def _read_until(lines: Iterator[str], matches: Callable[[dict[str, Any]], bool]) -> None:
    for line in lines:
        if matches(json.loads(line)):
            return
    raise AssertionError("the bench ended before the expected event")


@pytest.mark.root
@pytest.mark.parametrize("option", ["--write-all", "--bmap"])
def test_bench_takes_the_write_options_flash_takes_and_writes_what_flash_writes(
    slots: Slots,
    image: BuiltImage,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
) -> None:
    args = [option]
    if option == "--bmap":
        bmap = write_bmap(tmp_path / "image.bmap", [(0, 2 * MiB)], image.size_bytes)
        args.append(str(bmap))
    args += ["--sha256", file_sha256(image.path)]  # a raw image proves nothing on its own
    assert (
        main(["--json", "flash", str(image.path), "--target", str(tmp_path / "f.img"), *args]) == 0
    )
    flashed = _json_lines(capsys.readouterr().out)
    slot = slots.add()
    slots.insert(slot, _card_bytes(image))
    bench = ["--slot", slot.path, "--bus", "loop", "--include-present", "--once", "1", "--yes"]
    report = ["--report", str(tmp_path / "cards.jsonl")]
    assert main(["--json", "bench", str(image.path), *bench, *report, *args]) == 0
    benched = _json_lines(capsys.readouterr().out)
    flash_summary = next(e for e in flashed if e["event"] == "summary")
    flash_result = next(e for e in flashed if e["event"] == "target_result")
    ready = next(e for e in benched if e["event"] == "station_ready")
    card = next(e for e in benched if e["event"] == "card_result")
    assert ready["mapped_bytes"] == flash_summary["mapped_bytes"]
    assert card["bytes_written"] == flash_result["bytes_written"]
    assert card["verified"] and card["image_sha256"] == flash_summary["image_sha256"]
    if option == "--write-all":
        assert card["bytes_written"] == image.size_bytes
    else:
        assert card["bytes_written"] < image.size_bytes


def test_boot_check_adds_the_booted_device_to_the_card_line(
    slots: Slots, image: BuiltImage, tmp_path: Path
) -> None:
    from dataclasses import replace as _replace

    from flasher.bench.bootcheck import BootCheckSettings, boot_checker
    from flasher.bench.cardsteps import CardSteps
    from flasher.sandbox.devices import default_devices
    from flasher.sandbox.supervisor_fake import FakeSupervisor

    spec = _replace(default_devices()[0].spec, local_mode=True, api_key=None)
    slot = slots.add()
    recorder, report = Recorder[BenchEvent](), tmp_path / "cards.jsonl"
    with FakeSupervisor(spec) as device:
        settings = BootCheckSettings(f"{device.host}:{device.port}", 20, 0.1)
        steps = CardSteps(probe_capacity=False, after_card=boot_checker(settings))
        station = _station(image, [slot], recorder, report, card_limit=1, card_steps=steps)
        with _running(station) as (finish, _cancel):
            recorder.wait_for(_ready, "station ready")
            slots.insert(slot, _card_bytes(image))
            finish()
    (record,) = ReportLog(report).records()
    assert record["ok"] is True
    boot = record["boot"]
    assert (boot["up"], boot["device_type"], boot["os_version"], boot["problem"]) == (
        True,
        image.device_type,
        "balenaOS 6.5.50+rev8",
        None,
    )
    assert boot["first_ping_s"] is not None
