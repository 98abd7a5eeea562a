"""Writing or verifying one image on N targets at once: an engine TargetJob per target, each on
a thread of its own.

Standard library plus flasher.errors, flasher.events and flasher.writer modules only (the root
helper runs it; the unprivileged process runs it too, for regular-file targets). A random-access
source is read by each target at its own pace through a `Prefetch` (the page cache is shared); a
stream is read once by a `FanOut` into small per-target inboxes (flasher.writer.chunkfeed). With
verify, a random-access source's chunks are hashed once for all targets by an `ImageHasher`
beside the writes, a stream's as they are read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import partial

from flasher.events import CancelToken
from flasher.writer.blockdev import OpenTarget
from flasher.writer.chunkfeed import FanOut, Feed, ImageHasher, Inbox, Prefetch
from flasher.writer.engine import PREFETCH_DEPTH, STALL_TIMEOUT_S, EmitFn, TargetJob, TargetOutcome
from flasher.writer.imagesource import ImageSourceLike, RandomAccessSource
from flasher.writer.plan import (
    ChunkDigests,
    IoPlan,
    PieceHasher,
    WritePlan,
    buffers_for,
    piece_bytes_for,
    round_up,
)
from flasher.writer.scrub import Range

OutcomeFn = Callable[[TargetOutcome], None]


def run_all(
    jobs: Sequence[Callable[[], TargetOutcome]], on_outcome: OutcomeFn | None
) -> list[TargetOutcome]:
    results: list[TargetOutcome | None] = [None] * len(jobs)

    def runner(n: int) -> None:
        results[n] = outcome = jobs[n]()
        if on_outcome is not None:
            on_outcome(outcome)

    threads = [
        threading.Thread(target=runner, args=(n,), name=f"flasher-target-{n}", daemon=True)
        for n in range(len(jobs))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]


def write_targets(
    source: ImageSourceLike,
    plan: WritePlan,
    targets: Sequence[OpenTarget],
    *,
    verify: bool = True,
    on_event: EmitFn,
    cancel: CancelToken,
    on_outcome: OutcomeFn | None = None,
    stall_timeout_s: float = STALL_TIMEOUT_S,
    budget_targets: int = 0,
    scrub: Sequence[Range] = (),
) -> list[TargetOutcome]:
    """Write (and verify) every target, scrubbing the `scrub` ranges; one outcome per target.

    `on_event` and `on_outcome` (called as each target ends) run on several threads at once
    and must be thread-safe. `budget_targets`: how many targets share the buffer budget (the
    other jobs' too, in a helper serving several); at least `len(targets)`.
    """
    digests = ChunkDigests(plan)
    io, depth = _shared(plan, max(len(targets), budget_targets))
    pieces = io.pieces.chunks
    jobs = [
        TargetJob(t, io, digests, source, on_event, cancel, scrub, buffers=depth) for t in targets
    ]
    if isinstance(source, RandomAccessSource):
        random_source = source
        buf_bytes = round_up(io.pieces.chunk_bytes, 4096)

        def fill(index: int, buf: memoryview) -> None:
            random_source.read_into(buf, pieces[index])

        image_hasher = ImageHasher(source, plan, digests) if verify else None

        def run_one(job: TargetJob) -> TargetOutcome:
            job.hasher = image_hasher
            feed = Prefetch(range(len(pieces)), fill, buf_bytes=buf_bytes, depth=depth)
            return job.run(feed, write=True, verify=verify)

        try:
            return run_all([partial(run_one, job) for job in jobs], on_outcome)
        finally:
            if image_hasher is not None:
                image_hasher.stop()
    inboxes = [Inbox(cancel) for _ in jobs]
    hasher = PieceHasher(io, digests) if verify else None
    fanout = FanOut(source, io, hasher, inboxes, stall_timeout_s)
    fanout.start()
    try:
        return run_all(
            [
                partial(job.run, box, write=True, verify=verify)
                for job, box in zip(jobs, inboxes, strict=True)
            ],
            on_outcome,
        )
    finally:
        for box in inboxes:
            box.close()
        fanout.join()


def verify_targets(
    source: RandomAccessSource,
    plan: WritePlan,
    targets: Sequence[OpenTarget],
    *,
    on_event: EmitFn,
    cancel: CancelToken,
    on_outcome: OutcomeFn | None = None,
    budget_targets: int = 0,
) -> list[TargetOutcome]:
    """Read every target back and compare it with the image, without writing."""
    digests = ChunkDigests(plan)
    io, depth = _shared(plan, max(len(targets), budget_targets))
    jobs = [TargetJob(t, io, digests, source, on_event, cancel, buffers=depth) for t in targets]
    return run_all([partial(job.run, Feed(), write=False, verify=True) for job in jobs], on_outcome)


def _shared(plan: WritePlan, sharing: int) -> tuple[IoPlan, int]:
    """`plan` cut into pieces for `sharing` targets sharing the buffer budget, and how many
    pieces each of them holds at once."""
    io = IoPlan.split(plan, piece_bytes_for(sharing, plan.chunk_bytes, PREFETCH_DEPTH))
    return io, buffers_for(sharing, io.pieces.chunk_bytes, PREFETCH_DEPTH)
