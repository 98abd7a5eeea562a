"""The bench's test rig: card-reader slots made of loop devices, a filesystem whose writes can be
held, an event recorder, and a station on a thread over those slots.

A bench slot is a loop device over an empty backing file: no card, size 0, which discovery does
not list (as a card reader with an empty slot). Inserting a card gives the file a size and tells
the kernel (LOOP_SET_CAPACITY plus a "change" uevent, what a reader's media change does); pulling
it shrinks the file to nothing the same way, so writes in flight fail and the monitor reports the
removal. `losetup -d` cannot stand in for a pull: on a device held open it only schedules the
detach for the last close, and the write carries on. To pull a card provably in the middle of its
write, its backing file sits on an ext4 filesystem that the test freezes (FIFREEZE): the writer
blocks on its first write until the test thaws it and pulls the card in the same instant.

The fixtures over these (`slots`, `image`, `freezer`) are declared in tests/integration/conftest.py.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest

from flasher.bench.events import BenchEvent, CardFinished, CardUpdate, StationReady
from flasher.bench.image import BenchJob
from flasher.bench.policy import DrivePolicy
from flasher.bench.report import ReportLog
from flasher.bench.station import DriveWatcher, Station, StationSummary
from flasher.cache import ImageCache
from flasher.events import CancelToken, Phase, PhaseChanged
from flasher.models import DeviceConfig
from flasher.provider import ImageProvider, SourceSpec
from tests.support.bootcheck import file_sha256, fsck_boot, mtype, region_sha256
from tests.support.images import BuiltImage
from tests.support.loopdev import LoopDevice, LoopDevices

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


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
