"""Scrubbing journal areas on a target (flasher.writer.scrub), and the scrub ranges on the wire:
what counts as a journal block, which blocks are zeroed, how a read error or zeros that do not
stick end, and which scrub fields a request or a growth line may carry."""

from __future__ import annotations

import json
import mmap
import os
import random
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from flasher.errors import Cancelled, VerificationFailed, WriteFailed, WriterProtocolError
from flasher.events import CancelToken
from flasher.writer.blockdev import OpenTarget, open_regular_file
from flasher.writer.growing import Growth, feed_growth, pump_growth
from flasher.writer.ioerrors import io_error
from flasher.writer.plan import WritePlan
from flasher.writer.protocol import (
    ImageSpec,
    Op,
    SourceKind,
    TargetDone,
    TargetSpec,
    WriteRequest,
    decode_event,
    decode_request,
    encode_event,
    encode_request,
)
from flasher.writer.scrub import (
    JBD2_MAGIC,
    SCAN_STEP_BYTES,
    ScrubRun,
    TargetScrub,
    magic_blocks,
    scan_ranges,
)

MiB = 1024 * 1024
BLOCK = 4096
DESCRIPTOR = JBD2_MAGIC + (1).to_bytes(4, "big") + (7).to_bytes(4, "big")  # a jbd2 descriptor


def _buffer(data: bytes) -> mmap.mmap:
    buf = mmap.mmap(-1, max(len(data), 1))
    buf[: len(data)] = data
    return buf


@pytest.mark.parametrize(("offset", "block"), [(0, 0), (1024, 0), (3072, 0), (4096 + 2048, 4096)])
def test_the_magic_at_a_1k_aligned_offset_marks_its_4k_block(offset: int, block: int) -> None:
    data = bytearray(3 * BLOCK)
    data[offset : offset + 12] = DESCRIPTOR
    assert magic_blocks(_buffer(bytes(data)), len(data)) == [block]


@pytest.mark.parametrize("offset", [1, 512, 1020, 4092])
def test_the_magic_anywhere_else_is_not_a_journal_block(offset: int) -> None:
    data = bytearray(3 * BLOCK)
    data[offset : offset + 4] = JBD2_MAGIC
    assert magic_blocks(_buffer(bytes(data)), len(data)) == []


def test_scanning_leaves_out_what_the_plan_writes_anyway() -> None:
    plan = WritePlan.build(64 * MiB, [(8 * MiB, MiB)], chunk_bytes=4 * MiB)
    scrub = [(6 * MiB, 2 * MiB + 8192), (9 * MiB, 4 * BLOCK)]
    assert scan_ranges(scrub, plan) == [(6 * MiB, 2 * MiB), (9 * MiB, 4 * BLOCK)]


def _file_target(path: Path) -> OpenTarget:
    return open_regular_file(str(path))


def _scrub(target: OpenTarget, ranges: list[tuple[int, int]]) -> TargetScrub:
    def error(err: OSError, doing: str, offset: int) -> Any:
        return io_error(err, target.path, doing, offset)

    def write(buf: memoryview, offset: int, _doing: str) -> None:
        os.pwrite(target.fd, buf, offset)

    return TargetScrub(target, ranges, error, write)


def test_a_scan_zeroes_exactly_the_blocks_holding_a_journal_magic(tmp_path: Path) -> None:
    data = bytearray(random.Random(3).randbytes(4 * MiB))
    stale = [MiB, MiB + 5 * BLOCK + 1024, 3 * MiB - BLOCK]
    outside = 3 * MiB + 2 * BLOCK  # not in the scrub ranges: left alone
    for offset in [*stale, outside]:
        data[offset : offset + len(DESCRIPTOR)] = DESCRIPTOR
    path = tmp_path / "card.img"
    path.write_bytes(bytes(data))
    target = _file_target(path)
    try:
        scrub = _scrub(target, [(MiB, 2 * MiB)])
        assert scrub.run(WritePlan.build(len(data), [(0, 4096)]), lambda: None)
        scrub.check()
    finally:
        target.close()
    blocks = [offset - offset % BLOCK for offset in stale]
    assert scrub.zeroed == blocks and scrub.scanned_bytes == 2 * MiB
    after = path.read_bytes()
    for block in blocks:
        data[block : block + BLOCK] = bytes(BLOCK)
    assert after == bytes(data)


def test_a_read_error_while_scanning_fails_the_target_with_the_offset(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)  # reading a directory fails with EISDIR
    try:
        target = cast(OpenTarget, SimpleNamespace(fd=fd, path="/dev/fake", direct=True))
        scrub = _scrub(target, [(MiB, MiB)])
        with pytest.raises(WriteFailed) as caught:
            scrub.run(WritePlan.build(4 * MiB, [(0, 4096)]), lambda: None)
    finally:
        os.close(fd)
    assert caught.value.offset == MiB and "reading back" in caught.value.message


def test_zeros_that_do_not_stick_fail_the_read_back(tmp_path: Path) -> None:
    data = bytearray(2 * MiB)
    data[MiB : MiB + len(DESCRIPTOR)] = DESCRIPTOR
    path = tmp_path / "card.img"
    path.write_bytes(bytes(data))
    target = _file_target(path)
    try:

        def error(err: OSError, doing: str, offset: int) -> Any:
            return io_error(err, target.path, doing, offset)

        def dropped(_buf: memoryview, _offset: int, _doing: str) -> None:
            pass  # a card that acknowledges writes it never keeps

        scrub = TargetScrub(target, [(MiB, MiB)], error, dropped)
        scrub.run(WritePlan.build(len(data), [(0, 4096)]), lambda: None)
        with pytest.raises(VerificationFailed) as caught:
            scrub.check()
    finally:
        target.close()
    assert caught.value.offset == MiB


def test_a_scan_on_its_own_thread_hands_back_what_it_zeroed(tmp_path: Path) -> None:
    data = bytearray(2 * MiB)
    data[MiB + BLOCK : MiB + BLOCK + len(DESCRIPTOR)] = DESCRIPTOR
    path = tmp_path / "card.img"
    path.write_bytes(bytes(data))
    target = _file_target(path)
    try:
        scrub = _scrub(target, [(MiB, MiB)])
        run = ScrubRun(scrub, WritePlan.build(len(data), [(0, 4096)]), lambda: None)
        assert run.result()
    finally:
        target.close()
    assert scrub.zeroed == [MiB + BLOCK] and path.read_bytes() == bytes(2 * MiB)


def test_a_scan_on_its_own_thread_hands_its_error_to_the_writer(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)  # reading a directory fails with EISDIR
    try:
        target = cast(OpenTarget, SimpleNamespace(fd=fd, path="/dev/fake", direct=True))
        plan = WritePlan.build(4 * MiB, [(0, 4096)])
        run = ScrubRun(_scrub(target, [(MiB, MiB)]), plan, lambda: None)
        with pytest.raises(WriteFailed) as caught:
            run.result()
    finally:
        os.close(fd)
    assert caught.value.offset == MiB


def test_a_cancelled_job_stops_the_scan_with_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "card.img"
    path.write_bytes(bytes(4 * MiB))
    target = _file_target(path)
    cancel = CancelToken()
    cancel.cancel()
    try:
        scrub = _scrub(target, [(MiB, 2 * MiB)])
        run = ScrubRun(scrub, WritePlan.build(4 * MiB, [(0, 4096)]), cancel.check)
        with pytest.raises(Cancelled):
            run.result()
    finally:
        target.close()
    assert scrub.scanned_bytes == 0


def test_an_abandoned_scan_stops_at_its_next_step(tmp_path: Path) -> None:
    path = tmp_path / "card.img"
    with path.open("wb") as f:
        f.truncate(64 * MiB)
    target = _file_target(path)
    entered = threading.Event()

    def slow_check() -> None:
        entered.set()
        time.sleep(0.05)

    try:
        scrub = _scrub(target, [(MiB, 60 * MiB)])
        run = ScrubRun(scrub, WritePlan.build(64 * MiB, [(0, 4096)]), slow_check)
        assert entered.wait(10)
        run.abandon()
        scanned = scrub.scanned_bytes
        time.sleep(0.1)
    finally:
        target.close()
    assert scanned <= 2 * SCAN_STEP_BYTES and scrub.scanned_bytes == scanned


# -- on the wire ------------------------------------------------------------------------------

TARGET = TargetSpec("/dev/sdb", "8:16", 32 * 10**9, "0123")
SCRUB = ((16 * MiB, 8 * BLOCK), (20 * MiB, BLOCK))


def _request(**changes: Any) -> WriteRequest:
    base: dict[str, Any] = {
        "targets": (TARGET,),
        "image": ImageSpec(64 * MiB, SourceKind.FD, None),
        "ranges": ((0, 4 * MiB), (8 * MiB, MiB)),
        "scrub": SCRUB,
    }
    base.update(changes)
    return WriteRequest(**base)


def _raw(**changes: Any) -> bytes:
    data = json.loads(encode_request(_request()))
    data.update(changes)
    return json.dumps(data).encode()


def test_a_request_carries_its_scrub_ranges() -> None:
    assert decode_request(encode_request(_request())).scrub == SCRUB


def test_a_request_without_scrub_has_none() -> None:
    data = json.loads(encode_request(_request()))
    del data["scrub"]
    assert decode_request(json.dumps(data).encode()).scrub == ()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (_raw(scrub="all"), "list of [offset, length] pairs"),
        (_raw(scrub=[[16 * MiB + 512, BLOCK]]), "aligned"),
        (_raw(scrub=[[16 * MiB, 1000]]), "aligned"),
        (_raw(scrub=[[20 * MiB, BLOCK], [16 * MiB, BLOCK]]), "sorted"),
        (_raw(scrub=[[64 * MiB - BLOCK, 2 * BLOCK]]), "inside the image"),
        (_raw(scrub=[[8 * MiB + BLOCK, BLOCK]]), "overlap the mapped ranges"),
        (_raw(ranges=None), "every byte"),
        (
            _raw(options={"verify": True, "write_all": True, "chunk_bytes": 4 * MiB}),
            "every byte",
        ),
        (_raw(op=Op.VERIFY.value), "only for writing"),
    ],
)
def test_a_bad_scrub_field_is_refused_by_name(raw: bytes, words: str) -> None:
    with pytest.raises(WriterProtocolError) as caught:
        decode_request(raw)
    assert "request.scrub" in caught.value.message and words in caught.value.message


def test_target_done_carries_what_was_scanned_and_zeroed() -> None:
    event = TargetDone("/dev/sdb", 4096, None, True, 1.5, scanned_bytes=8 * MiB, zeroed_blocks=3)
    assert decode_event(encode_event(event)) == event


def test_a_growth_line_carries_the_scrub_ranges_to_the_follower() -> None:
    source = Growth(64 * MiB)
    source.complete([(0, 4 * MiB)], [(8 * MiB, 2 * BLOCK)])
    read_end, write_end = os.pipe()
    pump = threading.Thread(target=pump_growth, args=(source, write_end, CancelToken()))
    pump.start()
    pump.join()
    os.close(write_end)
    copy = Growth(64 * MiB)
    feed_growth(read_end, copy, CancelToken())
    os.close(read_end)
    assert copy.scrub == ((8 * MiB, 2 * BLOCK),)


@pytest.mark.parametrize(
    "line",
    [
        {"ranges": [[0, 4 * MiB]], "scrub": [[MiB, BLOCK]]},
        {"ranges": None, "scrub": [[8 * MiB, BLOCK]]},
        {"ranges": [[0, 4 * MiB]], "scrub": [[8 * MiB + 1, BLOCK]]},
    ],
)
def test_a_bad_growth_scrub_fails_the_follow_by_name(line: dict[str, Any]) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, json.dumps(line).encode() + b"\n")
    os.close(write_end)
    growth = Growth(64 * MiB)
    feed_growth(read_end, growth, CancelToken())
    os.close(read_end)
    assert isinstance(growth.error, WriterProtocolError)
    assert "growth.scrub" in growth.error.message
