"""Prefetch: buffers filled ahead of one consumer by one or more threads, handed over in order."""

from __future__ import annotations

import threading
import time

import pytest

from flasher.writer.chunkfeed import Prefetch

BUF = 4096


def _stamp(index: int, buf: memoryview) -> None:
    buf[:8] = index.to_bytes(8, "little")


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("count", [0, 1, 2, 5, 12])
def test_every_index_arrives_once_in_order_with_its_bytes(workers: int, count: int) -> None:
    indices = list(range(100, 100 + count))
    feed = Prefetch(indices, _stamp, buf_bytes=BUF, workers=workers)
    got = []
    try:
        for index, buf in feed:
            got.append((index, int.from_bytes(buf[:8], "little")))
            feed.release(buf)
    finally:
        feed.close()
    assert got == [(i, i) for i in indices]


def test_two_workers_keep_two_fills_in_flight() -> None:
    """The read-back's point: a second read runs while the first is still being served (each
    fill here waits until another fill has started; one worker alone would never get there)."""
    both = threading.Barrier(2, timeout=5)

    def fill(index: int, buf: memoryview) -> None:
        both.wait()
        _stamp(index, buf)

    feed = Prefetch(range(6), fill, buf_bytes=BUF, depth=3, workers=2)
    try:
        seen = []
        for index, buf in feed:
            seen.append(index)
            feed.release(buf)
    finally:
        feed.close()
    assert seen == list(range(6))


def test_fills_never_run_more_than_the_pool_ahead_of_the_consumer() -> None:
    filled: list[int] = []
    feed = Prefetch(range(20), lambda i, b: filled.append(i), buf_bytes=BUF, depth=3, workers=2)
    try:
        it = iter(feed)
        _index, buf = next(it)
        time.sleep(0.3)  # the workers run ahead as far as the pool lets them
        assert sorted(filled) == [0, 1, 2]
        feed.release(buf)
        time.sleep(0.3)
        assert sorted(filled) == [0, 1, 2, 3]
    finally:
        feed.close()


def test_a_failed_fill_reaches_the_consumer_after_the_chunks_before_it() -> None:
    def fill(index: int, buf: memoryview) -> None:
        if index == 3:
            raise OSError(5, "Input/output error")
        _stamp(index, buf)

    feed = Prefetch(range(8), fill, buf_bytes=BUF, workers=2)
    seen = []
    try:
        with pytest.raises(OSError, match="Input/output"):
            for index, buf in feed:
                seen.append(index)
                feed.release(buf)
    finally:
        feed.close()
    assert seen == [0, 1, 2]


def test_close_ends_workers_that_wait_for_buffers_the_consumer_still_holds() -> None:
    feed = Prefetch(range(50), _stamp, buf_bytes=BUF, depth=2, workers=2)
    it = iter(feed)
    next(it)
    next(it)  # both buffers held, never released: the workers wait for one
    started = time.monotonic()
    feed.close()
    assert time.monotonic() - started < 2
    assert not any(t.name == "flasher-prefetch" and t.is_alive() for t in threading.enumerate())
