"""Unpacking a multi-block .xz into a file, each block decoded on a core straight to its offset.

The parallel reader (`flasher.image.xzparallel.parallel_xz_chunks`) hands blocks over in file
order, so a block decoded ahead of the reader waits in memory until the reader gets to it;
when the one reader stalls (on a write, a flush), every decoding thread soon stalls with it.
A file needs no order: the index gives every block's offset in the raw image, so here each
thread writes its block's pieces where they belong as it decodes them (`write`) and nothing
waits for the block before it. The pieces are still reported in file order (`step`): those of
the first block not yet reported as they are written, those of a block decoded ahead once
every block before it is reported. So whoever follows the file sees exactly what a sequential
decode would have written by then, and a block that fails its check raises after the pieces
decoded before the fault, as it would there.

Memory: every thread holds one decoded piece and the slice of its block's compressed bytes
it is decoding (it reads them by position as it goes; the feeding thread only checks the
bytes between blocks), and blocks are handed out only while fewer than `AHEAD_PER_WORKER`
per thread wait to be reported (the one being reported included). The blocks are handed
out on a thread of their own, so a slow `step` (a follower that is behind) does not keep the
decoding threads waiting. Imports only the standard library, flasher.errors and
flasher.image modules.
"""

from __future__ import annotations

import lzma
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from flasher.errors import Cancelled
from flasher.image import decoders as dec
from flasher.image.xzparallel import XzBlock, XzPlan, block_pieces, block_places, file_slices

Extents = list[tuple[int, int]]
# (a decoded piece, its offset in the raw image) -> the (offset, length) extents written
WriteFn = Callable[[bytes, int], Extents]
# (raw bytes complete from the start, extents written since the previous step), in file order
StepFn = Callable[[int, Extents], None]

AHEAD_PER_WORKER = 4
# What a thread decodes at once and then writes: small, since it stays in memory only until
# written (the pieces that the stream reader waits for are larger).
PIECE_BYTES = 1024 * 1024


class _Halted(Exception):
    """The unpacking stopped; a block's thread gives up at its next piece."""


class _Block:
    """One block handed to a thread: the pieces it has written and not yet reported, as (the
    piece's end in the raw image, the extents written)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.future: Future[None] | None = None
        self.pieces: deque[tuple[int, Extents]] = deque()


class _Feed:
    """The blocks handed to the threads and not yet reported, filled by a thread of its own so
    that a slow `step` does not keep the threads from their next blocks."""

    def __init__(
        self,
        name: str,
        workers: int,
        pread: dec.PreadFn,
        write: WriteFn,
        cancelled: Callable[[], bool],
    ) -> None:
        self.name = name
        self.workers = workers
        self.pread = pread
        self.write = write
        self.cancelled = cancelled
        self.cond = threading.Condition()
        self.queue: deque[_Block] = deque()
        self.halt = threading.Event()
        self.fed = False
        self.error: BaseException | None = None

    def _decode(
        self, out: _Block, header: bytes, block: XzBlock, place: tuple[int, str], offset: int
    ) -> None:
        """The block stored at `place` (its offset in the file, which block it is), written
        from `offset` in the raw image."""
        at, what = place
        slices = file_slices(self.pread, at, block.stored_bytes, self.name, what)
        for piece in block_pieces(header, block, slices, PIECE_BYTES):
            if self.halt.is_set() or self.cancelled():
                raise _Halted
            written = self.write(piece, offset)
            offset += len(piece)
            with self.cond:
                out.pieces.append((offset, written))
                self.cond.notify_all()

    def _room(self) -> bool:
        """Whether another block may start (called holding `cond`)."""
        undone = sum(not b.future.done() for b in self.queue if b.future is not None)
        return len(self.queue) < AHEAD_PER_WORKER * self.workers and undone <= self.workers

    def notify(self, _future: object = None) -> None:
        with self.cond:
            self.cond.notify_all()

    def fill(self, jobs: Iterator[tuple[bytes, XzBlock, tuple[int, str], str]]) -> None:
        """Hand the blocks out (on the feeding thread) while there is room."""
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="xz-unpack")
        offset = 0
        try:
            for header, block, place, where in jobs:  # past the last: the indexes are checked
                out = _Block(where)
                with self.cond:
                    while not self._room() and not self.halt.is_set():
                        self.cond.wait()
                    if self.halt.is_set():
                        return
                    out.future = pool.submit(self._decode, out, header, block, place, offset)
                    self.queue.append(out)
                out.future.add_done_callback(self.notify)
                offset += block.uncompressed_bytes
        except BaseException as err:  # handed to the reporting thread, in order
            self.error = err
        finally:
            with self.cond:
                self.fed = True
                self.cond.notify_all()
            # blocks not yet started are dropped only once the unpacking stops
            pool.shutdown(wait=True, cancel_futures=self.halt.is_set())

    def next_pieces(self) -> tuple[_Block, list[tuple[int, Extents]], bool] | None:
        """The first block not yet reported once it has pieces to report or is done: the
        block, those pieces and whether it is done; None when every block is reported."""
        with self.cond:
            while True:
                if self.queue:
                    out = self.queue[0]
                    assert out.future is not None
                    done = out.future.done()  # its thread adds its pieces before it is done
                    if out.pieces or done:
                        pieces = list(out.pieces)
                        out.pieces.clear()
                        return out, pieces, done
                elif self.fed:
                    if self.error is not None:
                        raise self.error
                    return None
                self.cond.wait()

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
    pread: dec.PreadFn,
    write: WriteFn,
    step: StepFn,
    cancelled: Callable[[], bool] = lambda: False,
) -> int:
    """Decode the planned blocks of the file read through `src` (at its start; each block's
    bytes are read by position, through `pread`, by the thread decoding it) on `workers`
    threads, each piece written through `write` at its raw offset; `step` learns the pieces in
    file order, those of a block decoded ahead once the blocks before it are reported. Returns
    the raw size. Raises ImageError (corrupt, truncated) for the first bad block after stepping
    what was decoded before the fault, Cancelled once `cancelled()` turns true, and whatever
    `write` or `step` raise."""
    feed = _Feed(name, workers, pread, write, cancelled)
    feeder = threading.Thread(
        target=feed.fill,
        args=(block_places(plan, src, name),),
        name="xz-unpack-feed",
        daemon=True,
    )
    feeder.start()
    size = 0
    try:
        while (ready := feed.next_pieces()) is not None:
            out, pieces, done = ready
            for size, written in pieces:
                step(size, written)
            if done:
                assert out.future is not None
                try:
                    out.future.result()
                except (lzma.LZMAError, EOFError) as err:
                    raise dec.corrupt(name, f"xz {out.where}: {err}") from None
                except _Halted:
                    raise Cancelled() from None
                feed.reported()
        return size
    finally:
        feed.halt.set()
        feed.notify()
        feeder.join()
