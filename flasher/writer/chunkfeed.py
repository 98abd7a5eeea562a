"""Chunk feeds for the engine: per-target prefetching, and a stream fanned out to many targets.

Standard library plus flasher.errors, flasher.events and flasher.writer modules only.
`Prefetch` fills a small pool of page-aligned buffers ahead of one consumer (a target reading
the random-access image at its own pace, or a read-back). `FanOut` reads a stream once and
offers each chunk to every target's bounded `Inbox`; a target that does not take a chunk within
the stall timeout is dropped, so memory stays bounded and one dead card cannot stop the rest.
`ImageHasher` takes a random-access image's chunk digests on its own thread, once for all
targets, at a lower CPU priority. Feeds carry I/O pieces (`IoPlan`); digests are per chunk,
built from the pieces.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from flasher.errors import FlasherError, ImageError, WriteFailed
from flasher.events import CancelToken
from flasher.writer.imagesource import STREAM_NAME, ImageSourceLike
from flasher.writer.plan import Chunk, ChunkDigests, IoPlan, PieceHasher, WritePlan, round_up

QUEUE_DEPTH = 3
POLL_S = 0.1
# The image hasher reads a chunk this much at a time: one buffer per job, and a bench station
# runs a job per card.
HASHER_READ_BYTES = 256 * 1024
# Beside the writes, the image hasher yields the CPU to the reads, writes and kernel copies.
HASHER_NICE = 10


class Feed:
    """Chunks for one target, in plan order: (index, buffer); this base feed is empty."""

    def __iter__(self) -> Iterator[tuple[int, mmap.mmap]]:
        return iter(())

    def release(self, buf: mmap.mmap) -> None:
        """Return a buffer once its bytes have been used."""

    def close(self) -> None:
        """Stop producing; called when the target finishes or fails."""


class Prefetch(Feed):
    """Threads filling a small pool of aligned buffers ahead of the consumer, in order.

    With `workers` > 1, worker k fills indices k, k + workers, ... (one more read in flight
    keeps a device busy while another is copied); the consumer still gets them in order."""

    def __init__(
        self,
        indices: Sequence[int],
        fill: Callable[[int, memoryview], None],
        *,
        buf_bytes: int,
        depth: int = QUEUE_DEPTH,
        workers: int = 1,
    ) -> None:
        self._free: queue.Queue[mmap.mmap] = queue.Queue()
        for _ in range(max(depth, workers)):
            self._free.put(mmap.mmap(-1, buf_bytes))
        self._ready: list[queue.Queue[tuple[int, mmap.mmap] | BaseException | None]] = [
            queue.Queue() for _ in range(workers)
        ]
        self._stop = threading.Event()
        self._fill = fill
        # Each worker takes a buffer only for its index that comes next in order, so the
        # shared pool never fills up with chunks the consumer cannot take yet.
        self._turn = threading.Condition()
        self._next = 0
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(k, indices[k::workers], self._ready[k]),
                name="flasher-prefetch",
                daemon=True,
            )
            for k in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _run(
        self,
        first: int,
        indices: Sequence[int],
        ready: queue.Queue[tuple[int, mmap.mmap] | BaseException | None],
    ) -> None:
        workers = len(self._ready)
        try:
            for n, index in enumerate(indices):
                if not self._wait_turn(first + n * workers):
                    return
                buf = self._take()
                with self._turn:
                    self._next += 1
                    self._turn.notify_all()
                if buf is None:
                    return
                self._fill(index, memoryview(buf))
                ready.put((index, buf))
            ready.put(None)
        except BaseException as err:  # handed to the consumer, which reports it
            ready.put(err)

    def _wait_turn(self, position: int) -> bool:
        with self._turn:
            while self._next != position:
                if self._stop.is_set():
                    return False
                self._turn.wait(POLL_S)
        return True

    def _take(self) -> mmap.mmap | None:
        while not self._stop.is_set():
            try:
                return self._free.get(timeout=POLL_S)
            except queue.Empty:
                continue
        return None

    def __iter__(self) -> Iterator[tuple[int, mmap.mmap]]:
        k = 0
        while True:
            item = self._ready[k].get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            k = (k + 1) % len(self._ready)

    def release(self, buf: mmap.mmap) -> None:
        self._free.put(buf)

    def close(self) -> None:
        self._stop.set()
        with self._turn:
            self._turn.notify_all()
        for thread in self._threads:
            thread.join()
        # Free the pool now rather than when the feed object goes: a target's write feed stays
        # referenced while it verifies, and N targets' idle buffers would add up.
        _drain(self._free)
        for ready in self._ready:
            _drain(ready)


def _drain(pool: queue.Queue[Any]) -> None:
    while not pool.empty():
        pool.get_nowait()


class Inbox(Feed):
    """One target's bounded queue of chunks fanned out from a shared stream reader."""

    def __init__(self, cancel: CancelToken, depth: int = QUEUE_DEPTH) -> None:
        self._items: queue.Queue[tuple[int, mmap.mmap] | BaseException | None] = queue.Queue(
            maxsize=depth
        )
        self._cancel = cancel
        self.closed = threading.Event()
        self._dropped: FlasherError | None = None

    def offer(self, item: tuple[int, mmap.mmap] | BaseException | None, timeout_s: float) -> bool:
        """Queue an item; False if the target is gone or did not take it within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not self.closed.is_set():
            try:
                self._items.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                if time.monotonic() > deadline or self._cancel.cancelled:
                    return False
        return False

    def __iter__(self) -> Iterator[tuple[int, mmap.mmap]]:
        while True:
            try:
                item = self._items.get(timeout=POLL_S)
            except queue.Empty:
                self._cancel.check()
                if self._dropped is not None:
                    raise self._dropped from None
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.closed.set()

    def drop(self, error: FlasherError) -> None:
        """Stop feeding this target; it fails with `error` once its queue runs dry."""
        self._dropped = error
        self.closed.set()


class FanOut(threading.Thread):
    """Reads a stream once, hashes each chunk once (when verifying), offers it to every target."""

    def __init__(
        self,
        source: ImageSourceLike,
        io: IoPlan,
        hasher: PieceHasher | None,
        inboxes: Sequence[Inbox],
        stall_timeout_s: float,
    ) -> None:
        super().__init__(name="flasher-fanout", daemon=True)
        self._source = source
        self._pieces = io.pieces
        self._hasher = hasher
        self._inboxes = list(inboxes)
        self._stall_timeout_s = stall_timeout_s

    def _live(self) -> list[Inbox]:
        return [box for box in self._inboxes if not box.closed.is_set()]

    def _broadcast(self, item: tuple[int, mmap.mmap] | BaseException | None) -> None:
        for box in self._live():
            if not box.offer(item, self._stall_timeout_s) and not box.closed.is_set():
                box.drop(
                    WriteFailed(
                        f"The target stopped accepting data for {self._stall_timeout_s:.0f} s "
                        "and was dropped so the others could go on.",
                        hint="The card or reader is not responding; try another one.",
                    )
                )

    def run(self) -> None:
        try:
            for index, piece in enumerate(self._pieces.chunks):
                if not self._live():
                    return
                # A fresh buffer per piece: targets hold it read-only until they release it.
                buf = mmap.mmap(-1, round_up(piece.length, 4096))
                self._source.read_into(memoryview(buf), piece)
                if self._hasher is not None:
                    self._hasher.add(index, memoryview(buf)[: piece.length])
                self._broadcast((index, buf))
            self._source.finish()
            self._broadcast(None)
        except BaseException as err:
            self._broadcast(err)


class ImageHasher:
    """The chunk digests (the job's sha256) taken from a random-access image on a thread of its
    own, once for all targets, so no write ever waits for a digest. One 256 KiB buffer per job.

    While the targets still write (`write_targets`), it goes from the first chunk on, behind
    the writers' reads, in pages they have just brought in, at a lower CPU priority: the reads,
    writes and kernel copies come first. Once a target has written everything (`hurry`) it
    runs at the usual priority and catches up while the targets flush and read back. The
    targets hash nothing themselves then; each waits for it (`wait`) before it reports, so N
    targets never hash a chunk twice. Once the image is complete and the targets
    are about to verify from the front (decode-while-writing), `last_first` starts it from the
    end at the usual priority, and verifying hashes the chunks it reaches first: the two meet
    in the middle, each on a core of its own.
    """

    def __init__(
        self,
        source: ImageSourceLike,
        plan: WritePlan,
        digests: ChunkDigests,
        *,
        last_first: bool = False,
    ) -> None:
        self._source = source
        self._plan = plan
        self._digests = digests
        indices = range(len(plan.chunks))
        self._order = reversed(indices) if last_first else indices
        self._nice = 0 if last_first else HASHER_NICE  # above the process's own
        self._base_nice = os.getpriority(os.PRIO_PROCESS, 0)
        self._tid = 0  # the thread's id for setpriority, once it runs
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._error: FlasherError | None = None
        self._thread = threading.Thread(target=self._run, name="flasher-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._lock:
            self._tid = threading.get_native_id()
            self._renice()
        step = min(HASHER_READ_BYTES, self._plan.chunk_bytes)
        buf = mmap.mmap(-1, round_up(step, 4096))
        try:
            for index in self._order:
                if self._stop.is_set():
                    return
                if self._digests.get(index) is not None:
                    continue
                chunk = self._plan.chunks[index]
                digest = hashlib.sha256()
                with memoryview(buf) as view:
                    for offset in range(chunk.offset, chunk.end, step):
                        piece = Chunk(offset, min(step, chunk.end - offset))
                        self._source.read_into(view, piece)
                        digest.update(view[: piece.length])
                self._digests.record(index, digest.digest())
        except FlasherError as err:
            self._error = err
        except OSError as err:
            self._error = ImageError(
                STREAM_NAME, f"could not be read again to hash it: {err.strerror or err}"
            )
        finally:
            buf.close()

    def _renice(self) -> None:
        if self._tid:
            with contextlib.suppress(OSError):  # this thread only (a Linux thread is a task)
                os.setpriority(os.PRIO_PROCESS, self._tid, min(19, self._base_nice + self._nice))

    def hurry(self) -> None:
        """A target has written everything: from now on the hashing is what it will wait for,
        so it runs at the usual priority (where lowering a nice value is allowed: as root)."""
        with self._lock:
            if self._nice:
                self._nice = 0
                self._renice()

    def wait(self, cancel: CancelToken) -> None:
        """Return once every chunk is hashed; raise what stopped the hashing, or Cancelled."""
        while self._thread.is_alive():
            cancel.check()
            self._thread.join(POLL_S)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop after the chunk in hand (the targets have ended) and wait for the thread."""
        self._stop.set()
        self._thread.join()
