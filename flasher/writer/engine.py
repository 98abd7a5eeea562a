"""Writing one image to one target, then verifying it from the medium: a TargetJob.

Standard library plus flasher.errors, flasher.events and flasher.writer modules only (the root
helper runs it; the unprivileged process runs it too, for regular-file targets).
flasher.writer.targets runs one TargetJob per target, each on a thread of its own.

Per target, in order: zero the first and last MiB (a half-written card never looks valid), write
every chunk except the first MiB in large aligned O_DIRECT writes while the journal areas are
scrubbed on another thread (flasher.writer.scrub), fsync, write the first MiB (the partition
table) last, fsync; then drop cached pages and read everything back, comparing it with the
image bytes re-read from a random-access source, or with the per-chunk sha256 digests taken
from a stream (the digests also make the job's sha256; a random-access source's are taken by
the job's ImageHasher, never on the write path). I/O goes in pieces of a chunk, smaller and fewer
at once when many targets share the process's memory (`piece_bytes_for`, `buffers_for`); the
digests stay per chunk, so the job's sha256 does not depend on the number of targets. A target
fed from a shared stream that stalls for `STALL_TIMEOUT_S` is dropped, so no card holds the
others back for long.

Card readers can cache, so a read-back can pass falsely on a lying reader; it never fails
falsely.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from flasher.error_codes import ProblemCode
from flasher.errors import (
    Cancelled,
    DriveRejected,
    FlasherError,
    ImageError,
    VerificationFailed,
    WriteFailed,
    WriterError,
)
from flasher.events import CancelToken, Event, Log, Phase, PhaseChanged, RateMeter
from flasher.writer.aligned import aligned_bytearray
from flasher.writer.blockdev import OpenTarget, TargetKind
from flasher.writer.chunkfeed import QUEUE_DEPTH, Feed, ImageHasher, Prefetch
from flasher.writer.imagesource import ImageSourceLike, RandomAccessSource
from flasher.writer.ioerrors import io_error
from flasher.writer.plan import (
    HEAD_BYTES,
    Chunk,
    ChunkDigests,
    IoPlan,
    PieceHasher,
    round_up,
)
from flasher.writer.scrub import Range, ScrubRun, TargetScrub

STALL_TIMEOUT_S = 120.0
# Buffers per target: one being read, one being written, two to ride out a stall on either side.
PREFETCH_DEPTH = 4
# Reads of the card in flight while verifying: one more keeps the device busy while a piece is
# copied and compared.
VERIFY_READERS = 2

EmitFn = Callable[[Event], None]

# What erasing writes, for every target of the process: a read-only private mapping is the
# kernel's zero page, so it takes no memory however many targets a station runs.
_ZEROS = mmap.mmap(-1, HEAD_BYTES, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)


@dataclass(frozen=True)
class TargetOutcome:
    """How one target ended: written (and verified) or the error that stopped it."""

    path: str
    ok: bool
    bytes_written: int = 0
    sha256: str | None = None
    verified: bool = False
    seconds: float = 0.0
    error: FlasherError | None = None
    scanned_bytes: int = 0  # of the scrub ranges
    zeroed_blocks: int = 0  # 4 KiB blocks of the scrub ranges that held the jbd2 magic


def _first_difference(expected: bytearray, actual: memoryview) -> int:
    """The offset of the first byte where two equally long buffers differ (they do differ)."""
    step = 4096
    for pos in range(0, len(expected), step):
        a = expected[pos : pos + step]
        if a != actual[pos : pos + step]:
            b = actual[pos : pos + step].tobytes()
            return pos + next(i for i in range(len(a)) if a[i] != b[i])
    return 0


# -- one target -------------------------------------------------------------------------------


class TargetJob:
    def __init__(
        self,
        target: OpenTarget,
        io: IoPlan,
        digests: ChunkDigests,
        source: ImageSourceLike,
        emit: EmitFn,
        cancel: CancelToken,
        scrub: Sequence[Range] = (),
        *,
        buffers: int = PREFETCH_DEPTH,
    ) -> None:
        self.target = target
        self.io = io
        self.plan = io.pieces  # what this job reads and writes: the pieces
        self.digests = digests
        self.source = source
        self.emit = emit
        self.cancel = cancel
        self._scratch: bytearray | None = None
        # Verifying: hashes the read-back pieces of a chunk whose digest is not known yet (a
        # random-access source without the job's ImageHasher) or to compare with the stream's
        # digest.
        self._verify_hasher = PieceHasher(io, digests)
        self._hashing = False
        self._read_back = hashlib.sha256()  # a stream's read-back chunk, compared at its end
        # Set by write_targets for a random-access source: it takes every chunk's digest, and
        # a verified target waits for it before reporting.
        self.hasher: ImageHasher | None = None
        self.scrub = TargetScrub(target, scrub, self._error, self._pwrite)
        # The pieces this target may hold at once, writing or reading back (fewer when many
        # targets share the helper's memory: plan.buffers_for).
        self.buffers = buffers

    # I/O primitives ----------------------------------------------------------------------

    def _error(self, err: OSError, doing: str, offset: int | None = None) -> FlasherError:
        if self.target.kind is TargetKind.BLOCK and not os.path.exists(self.target.device_path):
            # A pulled USB reader usually fails with EIO first; its node vanishing tells why.
            err = OSError(errno.ENODEV, os.strerror(errno.ENODEV))
        return io_error(err, self.target.path, doing, offset)

    def _io_len(self, length: int) -> int:
        return round_up(length, self.target.block_size) if self.target.direct else length

    def _pwrite(self, buf: memoryview, offset: int, doing: str = "writing") -> None:
        done = 0
        while done < len(buf):
            try:
                n = os.pwritev(self.target.fd, [buf[done:]], offset + done)
            except OSError as err:
                raise self._error(err, doing, offset + done) from None
            if n == 0:
                raise WriteFailed(
                    f"{self.target.path} accepted no bytes at byte {offset + done}.",
                    target=self.target.path,
                    offset=offset + done,
                )
            done += n

    def pwrite_piece(self, buf: memoryview, chunk: Chunk) -> None:
        """Write `chunk`'s bytes from `buf` (filled and padded by a source) at its offset."""
        self._pwrite(buf[: self._io_len(chunk.length)], chunk.offset)

    def fsync(self) -> None:
        self._fsync()

    def _fsync(self) -> None:
        try:
            os.fsync(self.target.fd)
        except OSError as err:
            raise self._error(err, "flushing its cache") from None

    def _zero(self, offset: int, length: int) -> None:
        zeros = memoryview(_ZEROS)
        while length > 0:
            step = min(length, len(zeros))
            self._pwrite(zeros[:step], offset, "erasing")
            offset += step
            length -= step

    # phases ------------------------------------------------------------------------------

    def check_fits(self) -> None:
        if not self.plan.chunks:
            return
        last = self.plan.chunks[-1]
        needed = last.offset + self._io_len(last.length)
        if needed > self.target.size_bytes and self.target.kind is TargetKind.BLOCK:
            raise DriveRejected(
                f"{self.target.path} is too small: {self.target.size_bytes} bytes for an image "
                f"of {self.plan.image_size_bytes}.",
                hint="Use a larger card.",
                target=self.target.path,
                problem=ProblemCode.TOO_SMALL,
            )

    def use_plan(self, io: IoPlan, digests: ChunkDigests, scrub: Sequence[Range]) -> None:
        """Write, scrub and verify as `io` and `scrub` say from now on (a followed image's plan
        comes late)."""
        self.io, self.plan, self.digests = io, io.pieces, digests
        self._verify_hasher = PieceHasher(io, digests)
        self.scrub = TargetScrub(self.target, scrub, self._error, self._pwrite)

    @contextmanager
    def scrubbing(self) -> Iterator[Callable[[], None]]:
        """The journal areas scrubbed on a thread of their own while the block writes the
        mapped data (no chunk touches them). The block calls what it is given to wait for the
        scan (its error is raised there), before the flush that precedes the first MiB;
        leaving the block early stops the scan."""
        scan = ScrubRun(self.scrub, self.io.plan, self.cancel.check) if self.scrub.ranges else None

        def finish() -> None:
            if scan is not None and scan.result():
                zeroed = len(self.scrub.zeroed)
                self.emit(Log("info", f"zeroed {zeroed} stale journal block(s)", self.target.path))

        try:
            yield finish
        finally:
            if scan is not None:
                scan.abandon()

    def erase_ends(self) -> None:
        """Zero the first and last MiB, durably, before anything else is written."""
        t = self.target
        self._zero(0, min(HEAD_BYTES, t.size_bytes))
        if t.kind is TargetKind.BLOCK and t.size_bytes > HEAD_BYTES:
            tail = max(HEAD_BYTES, (t.size_bytes - HEAD_BYTES) // t.block_size * t.block_size)
            self._zero(tail, t.size_bytes - tail)
        self._fsync()

    def write(self, feed: Feed) -> int:
        t = self.target
        self.emit(PhaseChanged(Phase.WRITING, t.path))
        self.erase_ends()
        meter = RateMeter(Phase.WRITING, self.plan.total_bytes, target=t.path)
        # The partition table goes on last, once the rest is durable: a random-access source
        # gives it again then; a stream's is held back here until then.
        head = None if isinstance(self.source, RandomAccessSource) else mmap.mmap(-1, HEAD_BYTES)
        done = 0
        with self.scrubbing() as end_scrub:
            for index, buf in feed:
                self.cancel.check()
                chunk = self.plan.chunks[index]
                n = self._io_len(chunk.length)
                if chunk.offset >= HEAD_BYTES:
                    self._pwrite(memoryview(buf)[:n], chunk.offset)
                elif head is not None:
                    n = min(round_up(chunk.length, 4096), HEAD_BYTES - chunk.offset)
                    head[chunk.offset : chunk.offset + n] = memoryview(buf)[:n]
                feed.release(buf)
                done += chunk.length
                if (progress := meter.update(done)) is not None:
                    self.emit(progress)
            self.cancel.check()
            self.emit(PhaseChanged(Phase.SYNCING, t.path))
            if self.hasher is not None:
                self.hasher.hurry()
            end_scrub()
            self._fsync()  # the data and the zeroed journal blocks, before the first MiB
        feed.close()  # its buffers are not needed again: N targets' idle buffers add up
        if head is None:
            with memoryview(mmap.mmap(-1, HEAD_BYTES)) as view:
                self.write_head_again(view)
        else:
            self._write_held_head(head)
        self._fsync()
        if t.kind is TargetKind.FILE and os.fstat(t.fd).st_size > t.size_bytes:
            os.ftruncate(t.fd, t.size_bytes)  # drop the O_DIRECT padding past the image end
        return done

    def _write_held_head(self, head: mmap.mmap) -> None:
        """Write the pieces in the first MiB from `head`, where a stream's were kept."""
        with memoryview(head) as view:
            for index in self.plan.head_indices():
                chunk = self.plan.chunks[index]
                self._pwrite(
                    view[chunk.offset : chunk.offset + self._io_len(chunk.length)], chunk.offset
                )

    def write_head_again(self, buf: memoryview) -> int:
        """Write the pieces in the first MiB, each read again from the random-access source
        into `buf` (a MiB at least); the bytes written."""
        assert isinstance(self.source, RandomAccessSource)
        done = 0
        for index in self.plan.head_indices():
            chunk = self.plan.chunks[index]
            self.source.read_into(buf, chunk)  # zero-pads what O_DIRECT writes past its end
            self.pwrite_piece(buf, chunk)
            done += chunk.length
        return done

    def _read_target(self, index: int, buf: memoryview) -> None:
        chunk = self.plan.chunks[index]
        want = self._io_len(chunk.length)
        got = 0
        while got < chunk.length:
            try:
                n = os.preadv(self.target.fd, [buf[got:want]], chunk.offset + got)
            except OSError as err:
                raise self._error(err, "reading back", chunk.offset + got) from None
            if n == 0:
                raise VerificationFailed(
                    f"{self.target.path} ends at byte {chunk.offset + got}, inside the image.",
                    target=self.target.path,
                    offset=chunk.offset + got,
                )
            got += n

    def _image_bytes(self, chunk: Chunk) -> bytearray:
        """The image's bytes for `chunk` (base plus overlay), re-read from the random-access source.

        A bytearray on the left of `==` compares with memcmp: about 20 GB/s, where hashing the
        read-back bytes again runs at about 1.4 GB/s and held the verify phase back.
        """
        assert isinstance(self.source, RandomAccessSource)
        if self._scratch is None:
            self._scratch = aligned_bytearray(round_up(self.plan.chunk_bytes, 4096))
        with memoryview(self._scratch) as view:
            self.source.read_into(view[: chunk.length], chunk)
        if chunk.length == len(self._scratch):
            return self._scratch
        return self._scratch[: chunk.length]

    def _check_chunk(self, index: int, actual: memoryview) -> int | None:
        """None when the read-back piece equals the image; else the first differing offset
        (the chunk's start when only its digest is known: a stream cannot be re-read)."""
        piece = self.plan.chunks[index]
        owner = self.io.owner[index]
        if self.io.is_first(index):
            self._hashing = self.hasher is None and self.digests.get(owner) is None
        if isinstance(self.source, RandomAccessSource):
            expected = self._image_bytes(piece)
            if expected != actual:
                return piece.offset + _first_difference(expected, actual)
            if self._hashing:  # nothing else hashes this chunk (verify-only, decode-while-writing)
                self._verify_hasher.add(index, actual)
            return None
        known = self.digests.get(owner)
        if known is None:
            raise WriterError("nothing to verify against: the stream was not read")
        if self.io.is_first(index):
            self._read_back = hashlib.sha256()
        self._read_back.update(actual)
        if not self.io.is_last(index) or self._read_back.digest() == known:
            return None
        return self.io.plan.chunks[owner].offset

    def verify(self) -> None:
        t = self.target
        self.emit(PhaseChanged(Phase.VERIFYING, t.path))
        try:
            t.drop_cache()
        except OSError as err:
            self.emit(Log("warning", f"could not drop cached pages: {err.strerror}", t.path))
        meter = RateMeter(Phase.VERIFYING, self.plan.total_bytes, target=t.path)
        feed = Prefetch(
            range(len(self.plan.chunks)),
            self._read_target,
            buf_bytes=round_up(self.plan.chunk_bytes, 4096),
            depth=min(QUEUE_DEPTH, self.buffers),
            workers=VERIFY_READERS,
        )
        done = 0
        try:
            for index, buf in feed:
                self.cancel.check()
                chunk = self.plan.chunks[index]
                offset = self._check_chunk(index, memoryview(buf)[: chunk.length])
                if offset is not None:
                    exact = isinstance(self.source, RandomAccessSource)
                    at = f"at byte {offset} " if exact else ""
                    if not exact:  # a stream's digest covers the whole chunk, not the piece
                        chunk = self.io.plan.chunks[self.io.owner[index]]
                    raise VerificationFailed(
                        f"{t.path} differs from the image {at}"
                        f"(in bytes {chunk.offset}-{chunk.end - 1}).",
                        hint="The card may be faulty, worn out or counterfeit; "
                        "try another card or reader.",
                        target=t.path,
                        offset=offset,
                        range_start=chunk.offset,
                        range_end=chunk.end,
                    )
                feed.release(buf)
                done += chunk.length
                if (progress := meter.update(done)) is not None:
                    self.emit(progress)
        finally:
            feed.close()
        self.scrub.check()

    def invalidate(self) -> None:
        """Best effort after a cancel or a failed check: zero the first MiB so the card cannot
        pass for good."""
        try:
            self._zero(0, min(HEAD_BYTES, self.target.size_bytes))
            self._fsync()
        except FlasherError as err:
            self.emit(Log("warning", f"could not erase the first MiB: {err}", self.target.path))

    def run(self, feed: Feed, *, write: bool, verify: bool) -> TargetOutcome:
        started = time.monotonic()
        t = self.target
        written = 0
        try:
            if write:
                self.check_fits()
                written = self.write(feed)  # closes the feed before the first MiB goes on
            if verify:
                self.verify()
                if self.hasher is not None:
                    self.hasher.wait(self.cancel)
            if write:
                reason = t.reread_partitions()
                if reason:
                    self.emit(Log("info", f"partition table not re-read: {reason}", t.path))
            return self.succeeded(written, verify, started)
        except (Cancelled, VerificationFailed, ImageError) as err:
            # Cancelled, read back wrong, or the image itself turned out corrupt: the card
            # must not boot from what was written.
            if write:
                self.invalidate()
            return self.failed(err, started)
        except FlasherError as err:
            return self.failed(err, started)
        except OSError as err:
            return self.failed(io_error(err, t.path, "writing"), started)
        finally:
            feed.close()

    def succeeded(self, written: int, verified: bool, started: float) -> TargetOutcome:
        """This target's outcome, `written` plan bytes (plus the zeroed blocks) later."""
        return TargetOutcome(
            self.target.path,
            True,
            bytes_written=written + self.scrub.zeroed_bytes,
            sha256=self.digests.root() if verified else None,
            verified=verified,
            seconds=time.monotonic() - started,
            scanned_bytes=self.scrub.scanned_bytes,
            zeroed_blocks=len(self.scrub.zeroed),
        )

    def failed(self, err: FlasherError, started: float) -> TargetOutcome:
        """This target's outcome for `err`, after `started` (time.monotonic())."""
        return TargetOutcome(self.target.path, False, seconds=time.monotonic() - started, error=err)
