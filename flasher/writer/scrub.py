"""Scrubbing a target's journal areas: the journal bodies an allocation map does not write.

Standard library plus flasher.errors and flasher.writer.{blockdev,plan,strictjson} only (the
root helper runs it).

The scrub ranges are the bodies of clean ext3/4 journals (flasher.image.ext4journal): nothing reads
them before writing them except jbd2 recovery, which stops at the first block that does not start
with the jbd2 magic, so what the image holds there does not matter. Instead of writing them, each
target's scrub ranges are read back from the medium (while its mapped data is written: `ScrubRun`;
no chunk touches them), and every 4 KiB block holding the magic at any 1 KiB-aligned offset (a
journal block of 1, 2 or 4 KiB could start there) is written as zeros, flushed before the first MiB.
A card that held this image in a previous life thus keeps none of that life's log. The zeroed blocks
count in the target's bytes written and are read back and compared with zeros when the target is
verified; the job's digest covers the mapped ranges only, so it stays the same for every target.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from flasher.errors import Cancelled, FlasherError, VerificationFailed
from flasher.writer.plan import WritePlan
from flasher.writer.strictjson import fail

if TYPE_CHECKING:  # blockdev imports the protocol, which imports this module
    from flasher.writer.blockdev import OpenTarget

Range = tuple[int, int]
JBD2_MAGIC = b"\xc0\x3b\x39\x98"  # big-endian 0xC03B3998 at the start of every jbd2 log block
SCRUB_BLOCK_BYTES = 4096
MAGIC_STRIDE_BYTES = 1024  # the smallest journal block size
SCAN_STEP_BYTES = 256 * 1024  # per target at once: 16 cards of a station hold 4 MiB for it

ErrorFn = Callable[[OSError, str, int], FlasherError]
WriteFn = Callable[[memoryview, int, str], None]


def check_scrub(
    scrub: Sequence[Range], ranges: Sequence[Range] | None, where: str, *, write_all: bool
) -> None:
    """WriterProtocolError naming `where` unless `scrub` (already sorted, disjoint and inside
    the image) is whole 4 KiB blocks, disjoint from `ranges`, and there is a map to scrub for."""
    if not scrub:
        return
    if ranges is None or write_all:
        fail(f"{where} must be empty when every byte of the image is written")
    for offset, length in scrub:
        if offset % SCRUB_BLOCK_BYTES or length % SCRUB_BLOCK_BYTES:
            fail(f"{where} must be aligned to {SCRUB_BLOCK_BYTES}-byte blocks")
    if _overlaps(scrub, ranges):
        fail(f"{where} must not overlap the mapped ranges")


def _overlaps(a: Sequence[Range], b: Sequence[Range]) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        a_end, b_end = a[i][0] + a[i][1], b[j][0] + b[j][1]
        if a[i][0] < b_end and b[j][0] < a_end:
            return True
        if a_end <= b_end:
            i += 1
        else:
            j += 1
    return False


def scan_ranges(scrub: Sequence[Range], plan: WritePlan) -> list[Range]:
    """The scrub ranges less what the plan writes anyway (its chunks may fill small gaps with
    the image's zeros), in whole scrub blocks."""
    out: list[Range] = []
    chunks = plan.chunks
    i = 0
    for offset, length in scrub:
        pos, end = offset, offset + length
        while i < len(chunks) and chunks[i].end <= pos:
            i += 1
        j = i
        while pos < end:
            if j < len(chunks) and chunks[j].offset <= pos:
                pos = max(pos, chunks[j].end)
                j += 1
                continue
            stop = end if j >= len(chunks) else min(end, chunks[j].offset)
            start = -(-pos // SCRUB_BLOCK_BYTES) * SCRUB_BLOCK_BYTES
            stop_aligned = stop // SCRUB_BLOCK_BYTES * SCRUB_BLOCK_BYTES
            if stop_aligned > start:
                out.append((start, stop_aligned - start))
            pos = stop
    return out


def magic_blocks(data: mmap.mmap, length: int) -> list[int]:
    """Offsets of the 4 KiB blocks among the first `length` bytes of `data` that hold the jbd2
    magic at a 1 KiB-aligned offset.

    Only the first byte of every KiB is searched (one strided copy, 1/1024 of the data), and
    the rest of the magic is compared where that byte matches: a substring search over the
    whole range ran at ~0.3 GB/s, longer than reading it from the card.
    """
    out: list[int] = []
    firsts = data[0:length:MAGIC_STRIDE_BYTES]
    lead = JBD2_MAGIC[:1]
    index = firsts.find(lead)
    while index >= 0:
        pos = index * MAGIC_STRIDE_BYTES
        if data[pos : pos + len(JBD2_MAGIC)] == JBD2_MAGIC:
            block = pos - pos % SCRUB_BLOCK_BYTES
            if not out or out[-1] != block:
                out.append(block)
        index = firsts.find(lead, index + 1)
    return out


class TargetScrub:
    """One target's scrub: scan and zero (`run`), then read the zeroed blocks back (`check`)."""

    def __init__(
        self, target: OpenTarget, ranges: Sequence[Range], error: ErrorFn, write: WriteFn
    ) -> None:
        self.target = target
        self.fd = target.fd
        self.path = target.path
        self.ranges = tuple(ranges)
        self._error = error
        self._write = write
        self.scanned_bytes = 0
        self.zeroed: list[int] = []

    @property
    def zeroed_bytes(self) -> int:
        return len(self.zeroed) * SCRUB_BLOCK_BYTES

    def _read(self, buf: mmap.mmap, offset: int, length: int) -> None:
        view = memoryview(buf)
        try:
            got = 0
            while got < length:
                try:
                    n = os.preadv(self.fd, [view[got:length]], offset + got)
                except OSError as err:
                    raise self._error(err, "reading back", offset + got) from None
                if n == 0:
                    raise VerificationFailed(
                        f"{self.path} ends at byte {offset + got}, inside the image.",
                        target=self.path,
                        offset=offset + got,
                    )
                got += n
        finally:
            view.release()

    def run(self, plan: WritePlan, check_cancel: Callable[[], None]) -> bool:
        """Scan the scrub ranges not written by `plan` and zero the blocks holding the magic;
        whether any block was zeroed (the caller flushes then)."""
        if not self.ranges:
            return False
        if not self.target.direct:  # read the medium, as verifying does
            with contextlib.suppress(OSError):
                self.target.drop_cache()
        buf = mmap.mmap(-1, SCAN_STEP_BYTES)
        zeros = mmap.mmap(-1, SCRUB_BLOCK_BYTES)
        try:
            for offset, length in scan_ranges(self.ranges, plan):
                for start in range(offset, offset + length, SCAN_STEP_BYTES):
                    check_cancel()
                    n = min(SCAN_STEP_BYTES, offset + length - start)
                    self._read(buf, start, n)
                    self.scanned_bytes += n
                    for block in magic_blocks(buf, n):
                        with memoryview(zeros) as view:
                            self._write(view, start + block, "erasing a journal block")
                        self.zeroed.append(start + block)
        finally:
            buf.close()
            zeros.close()
        return bool(self.zeroed)

    def check(self) -> None:
        """Read every zeroed block back (after the caller dropped cached pages): zeros, or
        VerificationFailed."""
        buf = mmap.mmap(-1, SCRUB_BLOCK_BYTES)
        try:
            for offset in self.zeroed:
                self._read(buf, offset, SCRUB_BLOCK_BYTES)
                if buf[:] != bytes(SCRUB_BLOCK_BYTES):
                    raise VerificationFailed(
                        f"{self.path} did not keep zeros written at byte {offset}.",
                        hint="The card may be faulty, worn out or counterfeit; "
                        "try another card or reader.",
                        target=self.path,
                        offset=offset,
                        range_start=offset,
                        range_end=offset + SCRUB_BLOCK_BYTES,
                    )
        finally:
            buf.close()


class ScrubRun:
    """`TargetScrub.run` on a thread of its own while the target's mapped data is written.

    The scan reads and zeroes only blocks that no chunk of the plan writes, so it can overlap
    the data; the caller flushes once both are done, before the first MiB is written. On a card
    reader or a throttled device the reads then take no time of their own.
    """

    def __init__(
        self, scrub: TargetScrub, plan: WritePlan, check_cancel: Callable[[], None]
    ) -> None:
        self._stop = threading.Event()
        self._check_cancel = check_cancel
        self._zeroed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(scrub, plan), name="flasher-scrub", daemon=True
        )
        self._thread.start()

    def _check(self) -> None:
        if self._stop.is_set():
            raise Cancelled()
        self._check_cancel()

    def _run(self, scrub: TargetScrub, plan: WritePlan) -> None:
        try:
            self._zeroed = scrub.run(plan, self._check)
        except BaseException as err:  # re-raised by result() on the writing thread
            self._error = err

    def result(self) -> bool:
        """Wait for the scan: whether it zeroed any block; its error, raised here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._zeroed

    def abandon(self) -> None:
        """Stop the scan at its next step and wait for it (a no-op once it has ended)."""
        self._stop.set()
        self._thread.join()
