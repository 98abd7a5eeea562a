"""Unpacking a multi-block .xz into a file, each block decoded on a core straight to its offset.

The parallel reader (`flasher.image.xzparallel.parallel_xz_chunks`) hands blocks over in file
order, so a block decoded ahead of the reader waits in memory until the reader gets to it;
when the one reader stalls (on a write, a flush), every decoding thread soon stalls with it.
A file needs no order: the index gives every block's offset in the raw image, so here each
thread writes its block's pieces where they belong as it decodes them (`write`) and nothing
waits for the block before it. The blocks are still reported in file order (`step`), each
once it is fully written and has passed its check, so whoever follows the file sees exactly
what a sequential decode would have written by then, and a block that fails its check is
reported after the blocks before it.

Memory: every thread holds one decoded piece and its block's compressed bytes; at most two
blocks more than there are threads are read and not yet decoded, and blocks are handed out
only while fewer than `AHEAD_PER_WORKER` per thread wait to be reported (the one being
reported included). The blocks are read and handed out on a thread of their own, so a slow
`step` (a follower that is behind) does not keep the decoding threads waiting. Imports
only the standard library, flasher.errors and flasher.image modules.
"""

from __future__ import annotations

import lzma
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from flasher.errors import Cancelled
from flasher.image import decoders as dec
from flasher.image.xzparallel import XzBlock, XzPlan, block_pieces, blocks_in_order

Extents = list[tuple[int, int]]
# (a decoded piece, its offset in the raw image) -> the (offset, length) extents written
WriteFn = Callable[[bytes, int], Extents]
# (raw bytes complete from the start, extents written since the previous step), in file order
StepFn = Callable[[int, Extents], None]
StartFn = Callable[[bytes, XzBlock, list[bytes], int], Future[Extents]]

AHEAD_PER_WORKER = 4


class _Halted(Exception):
    """The unpacking stopped; a block's thread gives up at its next piece."""


def _decode_to(
    header: bytes,
    block: XzBlock,
    data: list[bytes],
    offset: int,
    write: WriteFn,
    halted: Callable[[], bool],
) -> Extents:
    written: Extents = []
    for piece in block_pieces(header, block, data):
        if halted():
            raise _Halted
        written += write(piece, offset)
        offset += len(piece)
    return written


class _Feed:
    """The blocks handed to the threads and not yet reported, filled by a thread of its own so
    that a slow `step` does not keep the threads from their next blocks."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.cond = threading.Condition()
        self.queue: deque[tuple[Future[Extents], int, str]] = deque()
        self.halt = threading.Event()
        self.fed = False
        self.error: BaseException | None = None

    def room(self) -> bool:
        """Whether another block may start (called holding `cond`)."""
        undone = sum(not future.done() for future, _end, _where in self.queue)
        return len(self.queue) < AHEAD_PER_WORKER * self.workers and undone <= self.workers

    def notify(self, _future: object = None) -> None:
        with self.cond:
            self.cond.notify_all()

    def fill(self, jobs: Iterator[tuple[bytes, XzBlock, list[bytes], str]], start: StartFn) -> None:
        offset = 0
        try:
            for header, block, data, where in jobs:  # past the last: the indexes are checked
                with self.cond:
                    while not self.room() and not self.halt.is_set():
                        self.cond.wait()
                    if self.halt.is_set():
                        return
                    future = start(header, block, data, offset)
                    offset += block.uncompressed_bytes
                    self.queue.append((future, offset, where))
                future.add_done_callback(self.notify)
        except BaseException as err:  # handed to the reporting thread, in order
            self.error = err
        finally:
            with self.cond:
                self.fed = True
                self.cond.notify_all()

    def next_done(self) -> tuple[Future[Extents], int, str] | None:
        """The first block not yet reported once it is decoded; None when all are."""
        with self.cond:
            while not (self.queue and self.queue[0][0].done()):
                if self.fed and not self.queue:
                    if self.error is not None:
                        raise self.error
                    return None
                self.cond.wait()
            return self.queue[0]

    def reported(self) -> None:
        with self.cond:
            self.queue.popleft()
            self.cond.notify_all()


def unpack_blocks(
    src: dec.Input,
    name: str,
    plan: XzPlan,
    workers: int,
    *,
    write: WriteFn,
    step: StepFn,
    cancelled: Callable[[], bool] = lambda: False,
) -> int:
    """Decode the planned blocks of the file read through `src` (at its start) on `workers`
    threads, each piece written through `write` at its raw offset; `step` learns each block,
    in file order, once it is written. Returns the raw size. Raises ImageError (corrupt,
    truncated) for the first bad block after stepping the ones before it, Cancelled once
    `cancelled()` turns true, and whatever `write` or `step` raise."""
    feed = _Feed(workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xz-unpack")

    def halted() -> bool:
        return feed.halt.is_set() or cancelled()

    def start(header: bytes, block: XzBlock, data: list[bytes], offset: int) -> Future[Extents]:
        return pool.submit(_decode_to, header, block, data, offset, write, halted)

    feeder = threading.Thread(
        target=feed.fill,
        args=(blocks_in_order(plan, src, name), start),
        name="xz-unpack-feed",
        daemon=True,
    )
    feeder.start()
    size = 0
    try:
        while (head := feed.next_done()) is not None:
            future, size, where = head
            try:
                written = future.result()
            except (lzma.LZMAError, EOFError) as err:
                raise dec.corrupt(name, f"xz {where}: {err}") from None
            except _Halted:
                raise Cancelled() from None
            step(size, written)
            feed.reported()
        return size
    finally:
        feed.halt.set()
        feed.notify()
        feeder.join()
        pool.shutdown(wait=True, cancel_futures=True)
