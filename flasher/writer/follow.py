"""Writing an image while it is decoded: targets follow the cache file a decoder is filling.

Standard library plus flasher.errors, flasher.events and flasher.writer modules only (the root
helper runs it; the unprivileged process runs it too, for regular-file targets).

Per target: zero the first and last MiB (as the engine does), then write every data extent the
decoder publishes (its non-zero blocks, overlay patched in) past the first MiB as it arrives.
Once the stream has ended intact the allocation map is known: the pieces of the plan built from
it that no data extent covered (zero blocks the card must still get) are written from the now
complete file while the scrub ranges are scanned (flasher.writer.scrub), then fsync, the first
MiB last, fsync, and every mapped range is read back and compared with the complete file
exactly as the engine does (`TargetJob.verify`). The chunk digests (the job's sha256) are taken
from the complete file on a thread of their own, from the last chunk back, while the targets
finish writing and verify from the first chunk on. A failed or cancelled decode fails every
target with the first MiB zeroed, so a card is never left looking good.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import threading
import time
from collections.abc import Sequence
from functools import partial

from flasher.error_codes import ProblemCode
from flasher.errors import (
    Cancelled,
    DriveRejected,
    FlasherError,
    ImageError,
    VerificationFailed,
)
from flasher.events import CancelToken, Log, Phase, PhaseChanged, RateMeter
from flasher.writer.blockdev import OpenTarget, TargetKind
from flasher.writer.chunkfeed import ImageHasher
from flasher.writer.engine import PREFETCH_DEPTH, EmitFn, TargetJob, TargetOutcome
from flasher.writer.growing import FollowSource
from flasher.writer.ioerrors import io_error
from flasher.writer.plan import (
    HEAD_BYTES,
    Chunk,
    ChunkDigests,
    IoPlan,
    WritePlan,
    buffers_for,
    piece_bytes_for,
    round_up,
)
from flasher.writer.targets import OutcomeFn, run_all

# While the decoder is the bottleneck, each target is flushed every this many bytes written, so
# what its cache holds reaches the medium while the writer would otherwise wait for data, and
# the flush after decoding has only the rest to do.
FLUSH_BYTES = 64 * 1024 * 1024


class _Job:
    """What the targets share: the source, and the plan once the allocation map is known."""

    def __init__(
        self, source: FollowSource, chunk_bytes: int, piece_bytes: int, verify: bool, targets: int
    ) -> None:
        self.source = source
        self.chunk_bytes = chunk_bytes
        self.piece_bytes = piece_bytes
        self.verify = verify
        # The pieces each target holds at once while reading back (plan.buffers_for).
        self.buffers = buffers_for(targets, piece_bytes, PREFETCH_DEPTH)
        self._lock = threading.Lock()
        self._planned: tuple[IoPlan, ChunkDigests] | None = None
        self._hasher: ImageHasher | None = None

    def empty_plan(self) -> tuple[IoPlan, ChunkDigests]:
        plan = WritePlan(self.source.size_bytes, self.chunk_bytes, ())
        return IoPlan.split(plan, self.piece_bytes), ChunkDigests(plan)

    def planned(self) -> tuple[IoPlan, ChunkDigests]:
        """The plan from the complete image's allocation map (built once), and its digests."""
        with self._lock:
            if self._planned is None:
                plan = WritePlan.build(
                    self.source.size_bytes,
                    self.source.growth.ranges,
                    chunk_bytes=self.chunk_bytes,
                    overlay_ranges=self.source.overlay.ranges,
                )
                digests = ChunkDigests(plan)
                self._planned = IoPlan.split(plan, self.piece_bytes), digests
                if self.verify:
                    self._hasher = ImageHasher(self.source, plan, digests, last_first=True)
            return self._planned

    def stop(self) -> None:
        if self._hasher is not None:
            self._hasher.stop()


class _Target:
    def __init__(self, job: _Job, target: OpenTarget, emit: EmitFn, cancel: CancelToken) -> None:
        self.job = job
        self.target = target
        self.emit = emit
        self.cancel = cancel
        io, digests = job.empty_plan()
        self.engine = TargetJob(target, io, digests, job.source, emit, cancel, buffers=job.buffers)
        self._buf = mmap.mmap(-1, round_up(job.piece_bytes, 4096))
        self.written = 0

    def _put(self, offset: int, length: int) -> None:
        """Write image bytes [offset, offset + length) in pieces no larger than the buffer."""
        view = memoryview(self._buf)
        try:
            end = offset + length
            while offset < end:
                stop = min(end, (offset // self.job.piece_bytes + 1) * self.job.piece_bytes)
                chunk = Chunk(offset, stop - offset)
                self.job.source.read_into(view, chunk)
                self.engine.pwrite_piece(view, chunk)
                self.written += chunk.length
                offset = stop
        finally:
            view.release()

    def follow(self) -> None:
        """Write the data extents past the first MiB as the decoder publishes them."""
        growth = self.job.source.growth
        meter = RateMeter(Phase.WRITING, growth.size_bytes, target=self.target.path)
        cursor = flushed = 0
        while True:
            batch, cursor, complete = growth.wait(cursor, self.cancel)
            for offset, length in batch:
                start = max(offset, HEAD_BYTES)
                if start < offset + length:
                    self._put(start, offset + length - start)
                if (progress := meter.update(offset + length)) is not None:
                    self.emit(progress)
            if complete:
                return
            if self.written - flushed >= FLUSH_BYTES:
                self.engine.fsync()
                flushed = self.written

    def fill_gaps(self, io: IoPlan) -> None:
        """Write the plan's pieces past the first MiB where no data extent was written (zero
        blocks of the image, or configured bytes over them)."""
        covered = self.job.source.growth.written()
        starts = [offset for offset, _length in covered]
        for piece in io.pieces.chunks:
            if piece.offset < HEAD_BYTES:
                continue
            self.cancel.check()
            pos = piece.offset
            i = max(0, bisect.bisect_right(starts, pos) - 1)
            while pos < piece.end:
                while i < len(covered) and sum(covered[i]) <= pos:
                    i += 1
                if i < len(covered) and covered[i][0] <= pos:
                    pos = min(piece.end, sum(covered[i]))
                    continue
                gap_end = piece.end if i >= len(covered) else min(piece.end, covered[i][0])
                self._put(pos, gap_end - pos)
                pos = gap_end

    def check_size(self) -> None:
        """Refuse a card too small for the image (with O_DIRECT padding) before writing."""
        t = self.target
        size = self.job.source.size_bytes
        needed = round_up(size, t.block_size) if t.direct else size
        if needed > t.size_bytes and t.kind is TargetKind.BLOCK:
            raise DriveRejected(
                f"{t.path} is too small: {t.size_bytes} bytes for an image of {size}.",
                hint="Use a larger card.",
                target=t.path,
                problem=ProblemCode.TOO_SMALL,
            )

    def write_head(self) -> None:
        view = memoryview(self._buf)
        try:
            self.written += self.engine.write_head_again(view)
        finally:
            view.release()

    def _release_buffer(self) -> None:
        with contextlib.suppress(BufferError):  # a view still held by a failure's traceback
            self._buf.close()

    def run(self) -> TargetOutcome:
        started = time.monotonic()
        t = self.target
        writing = False
        try:
            self.check_size()
            self.emit(PhaseChanged(Phase.WRITING, t.path))
            writing = True
            self.engine.erase_ends()
            self.follow()
            io, digests = self.job.planned()
            self.engine.use_plan(io, digests, self.job.source.growth.scrub)
            self.engine.check_fits()
            with self.engine.scrubbing() as end_scrub:
                self.fill_gaps(io)
                self.cancel.check()
                self.emit(PhaseChanged(Phase.SYNCING, t.path))
                end_scrub()
            self.engine.fsync()  # the data and the zeroed journal blocks, before the first MiB
            self.write_head()
            self._release_buffer()  # not needed while verifying: N targets' buffers add up
            self.engine.fsync()
            if t.kind is TargetKind.FILE and os.fstat(t.fd).st_size > t.size_bytes:
                os.ftruncate(t.fd, t.size_bytes)  # drop the O_DIRECT padding past the image end
            if self.job.verify:
                self.engine.verify()
            reason = t.reread_partitions()
            if reason:
                self.emit(Log("info", f"partition table not re-read: {reason}", t.path))
            return self.engine.succeeded(self.written, self.job.verify, started)
        except (Cancelled, VerificationFailed, ImageError) as err:
            if writing:
                self.engine.invalidate()
            return self.engine.failed(err, started)
        except FlasherError as err:
            return self.engine.failed(err, started)
        except OSError as err:
            return self.engine.failed(io_error(err, t.path, "writing"), started)
        finally:
            self._release_buffer()


def follow_targets(
    source: FollowSource,
    targets: Sequence[OpenTarget],
    *,
    chunk_bytes: int,
    verify: bool = True,
    on_event: EmitFn,
    cancel: CancelToken,
    on_outcome: OutcomeFn | None = None,
) -> list[TargetOutcome]:
    """Write (and verify) every target while `source` is decoded; one outcome per target, in
    order. `on_event` and `on_outcome` must be thread-safe, as for `targets.write_targets`."""
    piece_bytes = piece_bytes_for(len(targets), chunk_bytes, PREFETCH_DEPTH)
    job = _Job(source, chunk_bytes, piece_bytes, verify, len(targets))
    workers = [_Target(job, t, on_event, cancel) for t in targets]
    try:
        return run_all([partial(_Target.run, w) for w in workers], on_outcome)
    finally:
        job.stop()
