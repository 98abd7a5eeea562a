"""Cards slower than the disk: loop devices throttled with the block cgroup, and bench slots.

`BlkioGroup` is a cgroup v1 blkio group of its own with per-device write and read limits
(`blkio.throttle.write_bps_device` / `read_bps_device`, keyed by each loop device's MAJ:MIN);
a command started through `wrap()` moves itself into the group before it runs, so it and its
children (the root writer helper) are throttled, while the benchmark's own checks are not.
The flasher writes and reads cards with O_DIRECT, so each byte is limited where it meets the
card, as on a real reader. `CardSlot` turns a loop device into an empty card-reader slot and
"inserts" a card the way a reader's media change does (a size, LOOP_SET_CAPACITY, a "change"
uevent). Needs root and cgroup v1 blkio. Imports the standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

BLKIO_ROOT = Path("/sys/fs/cgroup/blkio")
LOOP_SET_CAPACITY = 0x4C07
MB = 1_000_000


def device_number(path: str) -> str:
    rdev = os.stat(path).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


@dataclass(frozen=True)
class CardSet:
    """Cards and their speeds, written like `4x40` or `1x10+3x40` (count x MB/s, read = write)."""

    name: str
    speeds_mb_s: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> CardSet:
        speeds: list[int] = []
        for part in text.split("+"):
            count, _, speed = part.partition("x")
            if not (count.isdigit() and speed.isdigit()) or int(count) < 1 or int(speed) < 1:
                raise ValueError(f"bad card set {text!r}: use COUNTxMBPS[+COUNTxMBPS…]")
            speeds += [int(speed)] * int(count)
        return cls(text, tuple(speeds))

    @property
    def cards(self) -> int:
        return len(self.speeds_mb_s)


def alone_sets(sets: Sequence[CardSet]) -> list[CardSet]:
    """One card alone at each speed the sets use, for the 'vs alone' ratios."""
    speeds = sorted({s for cs in sets for s in cs.speeds_mb_s}, reverse=True)
    return [CardSet(f"1x{s}", (s,)) for s in speeds]


class BlkioGroup:
    """A cgroup v1 blkio group for one benchmark; removed on close."""

    def __init__(self, name: str) -> None:
        if not (BLKIO_ROOT / "blkio.throttle.write_bps_device").exists():
            raise SystemExit(f"no cgroup v1 blkio throttling at {BLKIO_ROOT}")
        self.path = BLKIO_ROOT / name
        self.path.mkdir(exist_ok=True)
        self._limited: set[str] = set()

    def limit(self, device: str, bytes_per_s: int) -> None:
        number = device_number(device)
        for kind in ("write", "read"):
            (self.path / f"blkio.throttle.{kind}_bps_device").write_text(
                f"{number} {bytes_per_s}\n"
            )
        self._limited.add(number)

    def clear(self) -> None:
        for number in self._limited:
            for kind in ("write", "read"):
                (self.path / f"blkio.throttle.{kind}_bps_device").write_text(f"{number} 0\n")
        self._limited.clear()

    def add(self, pid: int) -> None:
        """Move the running process `pid`, every thread of it, into the group."""
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """`argv` run by a shell that first moves itself into the group (then execs)."""
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.clear()
        for _ in range(50):  # the last process leaves the group a moment after it exits
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


@contextlib.contextmanager
def blkio_group(name: str) -> Iterator[BlkioGroup]:
    group = BlkioGroup(name)
    try:
        yield group
    finally:
        group.close()


class CardSlot:
    """A loop device as a card-reader slot: empty (size 0) until a card is inserted."""

    def __init__(self, device: str, backing: Path) -> None:
        self.device = device
        self.backing = backing

    def empty(self) -> None:
        os.truncate(self.backing, 0)
        self._capacity_changed()

    def insert(self, size_bytes: int) -> None:
        os.truncate(self.backing, size_bytes)
        self._capacity_changed()

    def _capacity_changed(self) -> None:
        fd = os.open(self.device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, LOOP_SET_CAPACITY, 0)
        finally:
            os.close(fd)
        Path("/sys/block", Path(self.device).name, "uevent").write_text("change")
