"""The write plan (aligned chunks, head held back), chunk digests, overlay and image sources."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
from pathlib import Path

import pytest

from flasher.errors import ImageError
from flasher.writer.imagesource import Overlay, RandomAccessSource, StreamSource
from flasher.writer.plan import (
    HEAD_BYTES,
    WRITE_BUFFERS_BUDGET_BYTES,
    Chunk,
    ChunkDigests,
    IoPlan,
    PieceHasher,
    WritePlan,
    buffers_for,
    extents,
    piece_bytes_for,
)

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        (None, [(0, 64 * MiB)]),
        ([(100, 10)], [(0, 4096)]),
        ([(0, 4096), (4096, 4096)], [(0, 8192)]),
        ([(0, 4096), (MiB, 4096)], [(0, MiB + 4096)]),
        ([(0, 4096), (3 * MiB, 4096)], [(0, 4096), (3 * MiB, 3 * MiB + 4096)]),
        ([(64 * MiB - 10, 10)], [(64 * MiB - 4096, 64 * MiB)]),
    ],
    ids=["whole", "aligned-out", "adjacent-merge", "small-gap-filled", "large-gap-kept", "tail"],
)
def test_extents_align_merge_and_coalesce(
    ranges: list[tuple[int, int]] | None, expected: list[tuple[int, int]]
) -> None:
    assert extents(64 * MiB, ranges) == expected


def test_plan_cuts_at_chunk_multiples_and_at_the_head() -> None:
    plan = WritePlan.build(10 * MiB + 100, None, chunk_bytes=4 * MiB)
    assert plan.chunks == (
        Chunk(0, HEAD_BYTES),
        Chunk(HEAD_BYTES, 3 * MiB),
        Chunk(4 * MiB, 4 * MiB),
        Chunk(8 * MiB, 2 * MiB + 100),
    )
    assert plan.total_bytes == 10 * MiB + 100
    assert plan.head_indices() == [0]


def test_write_all_ignores_the_ranges() -> None:
    sparse = WritePlan.build(16 * MiB, [(0, 4096)], write_all=False)
    full = WritePlan.build(16 * MiB, [(0, 4096)], write_all=True)
    assert sparse.total_bytes == 4096 and full.total_bytes == 16 * MiB


def test_plan_always_covers_the_overlay_ranges() -> None:
    plan = WritePlan.build(16 * MiB, [(0, 4096)], overlay_ranges=[(10 * MiB + 5, 20)])
    assert [(c.offset, c.length) for c in plan.chunks] == [(0, 4096), (10 * MiB, 4096)]


def test_plan_refuses_a_chunk_size_that_is_not_whole_mib() -> None:
    with pytest.raises(ValueError):
        WritePlan.build(16 * MiB, None, chunk_bytes=MiB + 4096)


def test_digest_root_is_over_chunk_digests_in_order() -> None:
    plan = WritePlan.build(2 * MiB, None)
    digests = ChunkDigests(plan)
    parts = [b"a" * MiB, b"b" * MiB]
    for index, data in reversed(list(enumerate(parts))):
        digests.ensure(index, data)
    expected = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()
    assert digests.root() == expected


def test_digest_root_needs_every_chunk() -> None:
    digests = ChunkDigests(WritePlan.build(2 * MiB, None))
    digests.ensure(0, b"x")
    with pytest.raises(ValueError):
        digests.root()


def test_overlay_patches_only_the_overlapping_part() -> None:
    overlay = Overlay([(10, b"ABCDEF"), (30, b"XY")])
    buf = bytearray(b"." * 20)
    overlay.apply(memoryview(buf), 12, 20)
    assert bytes(buf) == b"CDEF" + b"." * 14 + b"XY"


def test_overlay_refuses_overlapping_ranges() -> None:
    with pytest.raises(ValueError):
        Overlay([(0, b"abcd"), (2, b"zz")])


def test_random_access_source_applies_the_overlay_and_pads(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(bytes(range(256)) * 40)
    fd = os.open(path, os.O_RDONLY)
    try:
        source = RandomAccessSource(fd, 10240, Overlay([(5, b"!!")]))
        buf = bytearray(b"\xff" * 8192)
        source.read_into(memoryview(buf), Chunk(8192, 2048))
        assert buf[:2048] == (bytes(range(256)) * 40)[8192:]
        assert buf[2048:4096] == bytes(2048)
        assert buf[4096:] == b"\xff" * 4096
        source.read_into(memoryview(buf), Chunk(0, 8))
        assert buf[:8] == b"\x00\x01\x02\x03\x04!!\x07"
    finally:
        os.close(fd)


def test_random_access_source_refuses_a_file_shorter_than_announced(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ImageError):
            RandomAccessSource(fd, 101)
    finally:
        os.close(fd)


def test_stream_source_skips_unmapped_bytes_and_reads_forward() -> None:
    data = bytes(range(256)) * 64
    stream = io.BytesIO(data)
    source = StreamSource(stream.readinto, len(data))
    buf = bytearray(4096)
    source.read_into(memoryview(buf), Chunk(8192, 100))
    assert buf[:100] == data[8192:8292]
    with pytest.raises(ValueError):
        source.read_into(memoryview(buf), Chunk(0, 100))


def test_stream_source_reports_a_short_stream() -> None:
    source = StreamSource(io.BytesIO(b"x" * 10).readinto, 4096)
    with pytest.raises(ImageError, match="ended at byte 10"):
        source.read_into(memoryview(bytearray(4096)), Chunk(0, 4096))


@pytest.mark.parametrize("matches", [True, False], ids=["match", "mismatch"])
def test_stream_source_checks_the_whole_stream_hash(matches: bool) -> None:
    data = os.urandom(3 * 4096)
    sha = hashlib.sha256(data if matches else b"other").hexdigest()
    source = StreamSource(io.BytesIO(data).readinto, len(data), expected_sha256=sha)
    source.read_into(memoryview(bytearray(4096)), Chunk(0, 4096))
    if matches:
        source.finish()
    else:
        with pytest.raises(ImageError, match="sha256"):
            source.finish()


@pytest.mark.parametrize("piece_bytes", [MiB, 2 * MiB, 4 * MiB])
@pytest.mark.parametrize(
    "ranges", [None, [(0, 4096), (3 * MiB + 512, 6 * MiB), (11 * MiB, 5 * MiB + 7)]]
)
def test_pieces_tile_each_chunk_in_order(
    piece_bytes: int, ranges: list[tuple[int, int]] | None
) -> None:
    plan = WritePlan.build(17 * MiB, ranges)
    io = IoPlan.split(plan, piece_bytes)
    for index, chunk in enumerate(plan.chunks):
        mine = [p for p, owner in zip(io.pieces.chunks, io.owner, strict=True) if owner == index]
        assert mine[0].offset == chunk.offset and mine[-1].end == chunk.end
        assert all(a.end == b.offset for a, b in itertools.pairwise(mine))
        assert all(p.length <= piece_bytes for p in mine)


@pytest.mark.parametrize("piece_bytes", [MiB, 2 * MiB])
def test_a_chunk_digest_from_its_pieces_equals_the_digest_of_the_chunk(piece_bytes: int) -> None:
    data = random.Random(5).randbytes(9 * MiB + 100)
    plan = WritePlan.build(len(data), None)
    io = IoPlan.split(plan, piece_bytes)
    from_pieces, whole = ChunkDigests(plan), ChunkDigests(plan)
    hasher = PieceHasher(io, from_pieces)
    for index, piece in enumerate(io.pieces.chunks):
        hasher.add(index, data[piece.offset : piece.end])
    for index, chunk in enumerate(plan.chunks):
        whole.ensure(index, data[chunk.offset : chunk.end])
    assert from_pieces.root() == whole.root()


def test_many_targets_halve_the_piece_down_to_one_mib() -> None:
    assert [piece_bytes_for(n, 4 * MiB, 4) for n in (1, 2, 3, 4, 5, 8, 16, 64)] == [
        4 * MiB,
        4 * MiB,
        2 * MiB,
        2 * MiB,
        MiB,
        MiB,
        MiB,
        MiB,
    ]


def test_past_the_smallest_piece_many_targets_fill_fewer_buffers_ahead() -> None:
    # 4 buffers of 1 MiB for up to 8 targets (32 MiB), then what the budget leaves, but two at
    # least: one filled while the other is written.
    counts = (1, 8, 9, 16, 32, 64)
    pieces = [piece_bytes_for(n, 4 * MiB, 4) for n in counts]
    assert [buffers_for(n, piece, 4) for n, piece in zip(counts, pieces, strict=True)] == [
        4,
        4,
        3,
        2,
        2,
        2,
    ]
    for n, piece in zip(counts[:4], pieces[:4], strict=True):
        assert n * buffers_for(n, piece, 4) * piece <= WRITE_BUFFERS_BUDGET_BYTES
