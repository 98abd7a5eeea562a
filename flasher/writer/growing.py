"""An image file that a decoder is still filling, as the writer follows it.

Standard library plus flasher.errors, flasher.events and flasher.writer modules only (the root
helper uses it). While a compressed image is decoded into the cache, `Growth` publishes which
extents of that file hold data (its non-zero blocks, in image order) as they are written; once
the stream has ended and passed its own check, it publishes the allocation map (`complete`),
or the failure (`fail`). `FollowSource` reads the file at the offsets published so far, and
the whole file once complete, like a RandomAccessSource.

Between the client and the root helper a Growth travels over a pipe as JSON lines:
`{"data":[[offset,length],…]}` as extents are published, then `{"ranges":[[offset,length],…],
"scrub":[[offset,length],…]}` (or `{"ranges":null,"scrub":[]}`: the whole image) when decoding
is complete; `scrub` is checked as a request's (flasher.writer.scrub). A pipe that ends before the
ranges means decoding failed; the helper then fails its targets with a truncated-image error
(the client knows the real cause and reports it).
"""

from __future__ import annotations

import json
import os
import select
import threading
from collections.abc import Sequence

from flasher.error_codes import ProblemCode
from flasher.errors import Cancelled, FlasherError, ImageError, WriterProtocolError
from flasher.events import CancelToken
from flasher.writer.imagesource import STREAM_NAME, Overlay, RandomAccessSource
from flasher.writer.scrub import check_scrub
from flasher.writer.strictjson import Fields, loads, ranges_field

Range = tuple[int, int]  # (offset, length)
POLL_S = 0.1
MAX_LINE_BYTES = 16 * 1024 * 1024  # as a request's allocation map
EXTENTS_PER_LINE = 4096


class Growth:
    """The data extents of a file being decoded, then its allocation map; thread-safe."""

    def __init__(self, size_bytes: int) -> None:
        self.size_bytes = size_bytes
        self._cond = threading.Condition()
        self._extents: list[Range] = []
        self._end = 0
        self._complete = False
        self._ranges: tuple[Range, ...] | None = None
        self._scrub: tuple[Range, ...] = ()
        self._error: FlasherError | None = None

    def add(self, extents: Sequence[Range]) -> None:
        """Publish extents written since the last call: sorted, after every earlier one, inside
        the image (ValueError otherwise)."""
        with self._cond:
            if self._complete:
                raise ValueError("data published after the image was complete")
            for offset, length in extents:
                if offset < self._end or length <= 0 or offset + length > self.size_bytes:
                    raise ValueError("data extents must be sorted, disjoint and inside the image")
                self._extents.append((offset, length))
                self._end = offset + length
            self._cond.notify_all()

    def complete(self, ranges: Sequence[Range] | None, scrub: Sequence[Range] = ()) -> None:
        """The stream ended intact; `ranges` is the allocation map (None: every byte) and
        `scrub` its scrub ranges."""
        with self._cond:
            if self._error is None:
                self._ranges = None if ranges is None else tuple(ranges)
                self._scrub = tuple(scrub)
                self._complete = True
            self._cond.notify_all()

    def fail(self, error: FlasherError) -> None:
        """Decoding failed: whoever follows fails with `error`."""
        with self._cond:
            if not self._complete and self._error is None:
                self._error = error
            self._cond.notify_all()

    @property
    def error(self) -> FlasherError | None:
        return self._error

    def wait(self, cursor: int, cancel: CancelToken | None = None) -> tuple[list[Range], int, bool]:
        """The extents published since `cursor` (blocking until there are some or the image is
        complete), the next cursor, and whether the image is complete. Raises the failure
        error, or Cancelled."""
        with self._cond:
            while cursor >= len(self._extents) and not self._complete and self._error is None:
                if cancel is not None:
                    cancel.check()
                self._cond.wait(POLL_S)
            if cancel is not None:
                cancel.check()
            if self._error is not None:
                raise self._error
            batch = self._extents[cursor:]
            return batch, len(self._extents), self._complete

    def written(self) -> list[Range]:
        """Every data extent published so far."""
        with self._cond:
            return list(self._extents)

    @property
    def ranges(self) -> tuple[Range, ...] | None:
        """The allocation map (only meaningful once complete)."""
        if not self._complete:
            raise ValueError("the image is not complete yet")
        return self._ranges

    @property
    def scrub(self) -> tuple[Range, ...]:
        """The allocation map's scrub ranges (only meaningful once complete)."""
        if not self._complete:
            raise ValueError("the image is not complete yet")
        return self._scrub


class FollowSource(RandomAccessSource):
    """The image file a decoder is filling: read where `growth` says data are (and anywhere
    once it is complete), with the overlay patched in."""

    def __init__(self, fd: int, growth: Growth, overlay: Overlay | None = None) -> None:
        self.fd = fd
        self.size_bytes = growth.size_bytes
        self.overlay = overlay or Overlay()
        self.growth = growth


# -- the pipe between the client and the helper --------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pump_growth(growth: Growth, fd: int, cancel: CancelToken) -> None:
    """Send `growth` down the pipe `fd` until it is complete (the ranges line) or fails (the
    pipe just ends). Raises the failure error or Cancelled; closing `fd` is the caller's."""
    cursor = 0
    while True:
        batch, cursor, complete = growth.wait(cursor, cancel)
        for start in range(0, len(batch), EXTENTS_PER_LINE):
            part = [list(r) for r in batch[start : start + EXTENTS_PER_LINE]]
            _write_all(fd, json.dumps({"data": part}, separators=(",", ":")).encode() + b"\n")
        if complete:
            ranges = growth.ranges
            value = None if ranges is None else [list(r) for r in ranges]
            line = {"ranges": value, "scrub": [list(r) for r in growth.scrub]}
            _write_all(fd, json.dumps(line, separators=(",", ":")).encode() + b"\n")
            return


def _apply_line(growth: Growth, line: bytes) -> bool:
    """Apply one line; True when it completed the image."""
    top = Fields(loads(line, MAX_LINE_BYTES), "growth")
    if "data" in top.data:
        data = ranges_field(top.value("data"), "growth.data", growth.size_bytes)
        top.done()
        try:
            growth.add(data)
        except ValueError as err:
            raise WriterProtocolError(f"Writer protocol: growth.data: {err}.") from None
        return False
    raw = top.value("ranges", required=False)
    ranges = None if raw is None else ranges_field(raw, "growth.ranges", growth.size_bytes)
    raw = top.value("scrub", required=False) or []
    scrub = ranges_field(raw, "growth.scrub", growth.size_bytes)
    check_scrub(scrub, ranges, "growth.scrub", write_all=False)
    top.done()
    growth.complete(ranges, scrub)
    return True


def feed_growth(fd: int, growth: Growth, cancel: CancelToken) -> None:
    """Read the pipe `fd` into `growth` until the ranges line; a pipe that ends first, or a bad
    line, fails it. Runs on a thread of its own; closing `fd` is the caller's."""
    buf = bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        while not cancel.cancelled:
            if not poller.poll(int(POLL_S * 1000)):
                continue
            data = os.read(fd, 1024 * 1024)
            if not data:
                break
            buf += data
            while (newline := buf.find(b"\n")) >= 0:
                line = bytes(buf[:newline])
                del buf[: newline + 1]
                if _apply_line(growth, line):
                    return
            if len(buf) > MAX_LINE_BYTES:
                raise WriterProtocolError("Writer protocol: a growth line is too long.")
        if cancel.cancelled:
            raise Cancelled()
        growth.fail(
            ImageError(
                STREAM_NAME,
                "the image stream ended before the image was complete",
                problem=ProblemCode.TRUNCATED,
            )
        )
    except FlasherError as err:
        growth.fail(err)
    except OSError as err:
        growth.fail(ImageError(STREAM_NAME, f"reading the image's progress failed: {err.strerror}"))
