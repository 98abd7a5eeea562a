"""The capacity probe: does a card really hold what it claims? (counterfeit cards)

Standard library plus flasher.errors, flasher.events and flasher.writer modules only (the root
helper runs it). No network, no user files.

A fake-capacity card reports a large size but stores only a part of it: writes past the real
capacity wrap around onto earlier sectors (the controller drops high address bits) or vanish.
The probe writes one position-tagged 4 KiB block at every multiple of a power-of-two step over
the advertised size (64 to 128 positions, plus the last block), each tag holding a random
nonce, its own offset and a body derived from both. After a flush and with the page cache
bypassed (O_DIRECT, then the cache dropped), it reads every position back:

* its own tag: good;
* another position's tag: the two offsets land on the same sector, so the higher one lies
  past the real capacity, and their distance is the wrap period (the real size);
* anything else (zeros, old data, a read error): the block vanished.

Because the positions are multiples of a power of two, a card that wraps modulo a power of
two at least as large as the step maps every probed position onto another probed position, so
the wrap is always seen. Where blocks vanish, the boundary between the last good and the first
bad position is narrowed by bisection to one block. With `restore`, every block the probe
overwrote is put back as it was (in reverse order, so aliased blocks end as they started).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from flasher.errors import Cancelled
from flasher.events import CancelToken
from flasher.writer.blockdev import OpenTarget

PROBE_BLOCK_BYTES = 4096
DEFAULT_POSITIONS = 64
MIN_POSITIONS = 8
MAX_POSITIONS = 512
_MAGIC = b"FLASHER-CAPACITY-PROBE\x00\x01"
_NONCE_BYTES = 16
_HEADER_BYTES = len(_MAGIC) + _NONCE_BYTES + 8
MAX_WRAP_PARTS = 64

ProgressFn = Callable[[int, int], None]


class SectorIO(Protocol):
    """Block-aligned access to a target, bypassing the page cache."""

    @property
    def size_bytes(self) -> int: ...

    def read_at(self, offset: int, length: int) -> bytes: ...

    def write_at(self, offset: int, data: bytes) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class FdSectorIO:
    """An opened target's descriptor, read and written through page-aligned buffers (as
    O_DIRECT requires); `flush` syncs and then drops any cached pages of the device."""

    def __init__(self, target: OpenTarget) -> None:
        self._target = target
        self._buf = mmap.mmap(-1, PROBE_BLOCK_BYTES)

    @property
    def size_bytes(self) -> int:
        return self._target.size_bytes

    def read_at(self, offset: int, length: int) -> bytes:
        view = memoryview(self._buf)[:length]
        try:
            got = os.preadv(self._target.fd, [view], offset)
            return bytes(view[:got])
        finally:
            view.release()

    def write_at(self, offset: int, data: bytes) -> None:
        self._buf[: len(data)] = data
        view = memoryview(self._buf)[: len(data)]
        try:
            done = os.pwritev(self._target.fd, [view], offset)
        finally:
            view.release()
        if done != len(data):
            raise OSError(5, "short write", self._target.path)

    def flush(self) -> None:
        os.fsync(self._target.fd)
        self._target.drop_cache()

    def close(self) -> None:
        """Release the buffer and close the target."""
        self._buf.close()
        self._target.close()


@dataclass(frozen=True)
class CapacityReport:
    """What the probe found. `real_bytes` is the capacity shown to hold data (the advertised
    size when every position read back as written)."""

    advertised_bytes: int
    real_bytes: int
    positions: int
    bad_positions: int
    wrapped: bool
    restored: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.real_bytes >= self.advertised_bytes


def plan_offsets(size_bytes: int, positions: int = DEFAULT_POSITIONS) -> tuple[int, ...]:
    """Block-aligned offsets: every multiple of the largest power-of-two step that gives at
    least `positions` of them, and the last whole block."""
    last = (size_bytes // PROBE_BLOCK_BYTES - 1) * PROBE_BLOCK_BYTES
    if last < 0:
        return ()
    step = PROBE_BLOCK_BYTES
    while size_bytes // (step * 2) >= positions:
        step *= 2
    offsets = list(range(0, last + 1, step))
    if offsets[-1] != last:
        offsets.append(last)
    return tuple(offsets)


def make_tag(nonce: bytes, offset: int) -> bytes:
    """The block written at `offset`: magic, nonce, offset, then a body derived from both (so
    a block that merely starts right cannot pass)."""
    head = _MAGIC + nonce + offset.to_bytes(8, "big")
    body = hashlib.shake_256(head).digest(PROBE_BLOCK_BYTES - len(head))
    return head + body


def read_tag(data: bytes, nonce: bytes) -> int | None:
    """The offset a block read back was tagged with, or None when it holds no intact tag of
    this probe."""
    if len(data) != PROBE_BLOCK_BYTES or not data.startswith(_MAGIC + nonce):
        return None
    offset = int.from_bytes(data[len(_MAGIC) + _NONCE_BYTES : _HEADER_BYTES], "big")
    return offset if data == make_tag(nonce, offset) else None


class _Run:
    """One probe: the blocks it saved and wrote, so it can put them back."""

    def __init__(self, io: SectorIO, nonce: bytes, restore: bool, cancel: CancelToken) -> None:
        self.io = io
        self.nonce = nonce
        self.restore = restore
        self.cancel = cancel
        self.saved: dict[int, bytes] = {}
        self.written: list[int] = []

    def _save(self, offset: int) -> None:
        if self.restore and offset not in self.saved:
            self.saved[offset] = self.io.read_at(offset, PROBE_BLOCK_BYTES)

    def write(self, offset: int) -> None:
        if self.cancel.cancelled:
            raise Cancelled("The capacity probe was cancelled.")
        try:
            self._save(offset)
            self.written.append(offset)
            self.io.write_at(offset, make_tag(self.nonce, offset))
        except OSError:
            pass  # a block that cannot be written shows up as lost when read back

    def read(self, offset: int) -> int | None:
        try:
            return read_tag(self.io.read_at(offset, PROBE_BLOCK_BYTES), self.nonce)
        except OSError:
            return None

    def flush(self) -> None:
        # What did not reach the card reads back wrong.
        with contextlib.suppress(OSError):
            self.io.flush()

    def put_back(self) -> bool:
        if not self.restore:
            return False
        ok = True
        for offset in reversed(self.written):
            data = self.saved.get(offset)
            try:
                if data is not None and len(data) == PROBE_BLOCK_BYTES:
                    self.io.write_at(offset, data)
            except OSError:
                ok = False
        try:
            self.io.flush()
        except OSError:
            ok = False
        return ok


def _first_pass(run: _Run, offsets: Sequence[int], progress: ProgressFn) -> tuple[set[int], int]:
    """Write every tag, flush, read them back: the offsets past the real capacity, and the
    smallest wrap period seen (0 when nothing wrapped)."""
    total = 2 * len(offsets)
    for i, offset in enumerate(offsets):
        run.write(offset)
        progress(i + 1, total)
    run.flush()
    beyond: set[int] = set()
    period = 0
    for i, offset in enumerate(offsets):
        found = run.read(offset)
        if found is None:
            beyond.add(offset)
        elif found != offset:
            beyond.add(max(found, offset))
            distance = abs(found - offset)
            period = distance if period == 0 else min(period, distance)
        progress(len(offsets) + i + 1, total)
    return beyond, period


def _holds(run: _Run, offset: int) -> bool:
    run.write(offset)
    run.flush()
    return run.read(offset) == offset


def _aliases_start(run: _Run, offset: int) -> bool:
    """Whether writing at `offset` lands on the first block (`offset` is a wrap period)."""
    run.write(0)
    run.write(offset)
    run.flush()
    return run.read(0) == offset


def _wrap_size(run: _Run, period: int) -> int | None:
    """The real size of a card seen to wrap with `period`: the smallest whole fraction of it
    that maps onto the first block (the period may span the real size several times)."""
    for parts in range(MAX_WRAP_PARTS, 0, -1):
        size, rest = divmod(period, parts)
        if rest or size % PROBE_BLOCK_BYTES or size == 0:
            continue
        if _aliases_start(run, size):
            return size
    return None


def _bisect(run: _Run, low: int, high: int) -> int:
    """The end of the last block that holds data, between a known good `low` and a known bad
    `high`."""
    while low < high:
        mid = max(low, (low + high) // 2 // PROBE_BLOCK_BYTES * PROBE_BLOCK_BYTES)
        if _holds(run, mid):
            low = mid + PROBE_BLOCK_BYTES
        else:
            high = mid
    return low


def probe_capacity(
    io: SectorIO,
    *,
    positions: int = DEFAULT_POSITIONS,
    restore: bool = True,
    nonce: bytes | None = None,
    on_progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> CapacityReport:
    """Probe `io` (see the module docstring); never raises for what the card does wrong."""
    started = time.monotonic()
    size = io.size_bytes
    run = _Run(io, nonce or os.urandom(_NONCE_BYTES), restore, cancel or CancelToken())
    offsets = plan_offsets(size, positions)
    progress = on_progress or (lambda _done, _total: None)
    try:
        beyond, period = _first_pass(run, offsets, progress)
        real = size
        if beyond:
            first_bad = min(beyond)
            below = [o for o in offsets if o < first_bad]
            low = below[-1] + PROBE_BLOCK_BYTES if below else 0
            wrap = _wrap_size(run, period) if period else None
            real = wrap if wrap is not None else _bisect(run, low, first_bad)
    finally:
        restored = run.put_back()
    return CapacityReport(
        advertised_bytes=size,
        real_bytes=real,
        positions=len(offsets),
        bad_positions=len(beyond),
        wrapped=period > 0,
        restored=restored,
        seconds=time.monotonic() - started,
    )
