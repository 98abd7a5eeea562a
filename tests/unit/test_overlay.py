"""Overlay: in-memory writes over a read-only base, merged reads, streaming, hashing, output."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
import stat
from pathlib import Path

import pytest

from flasher.image.byteio import FileReader, FileReadWriter, MemoryIO
from flasher.image.overlay import Overlay

SIZE = 64 * 1024 + 300  # deliberately not a multiple of the sector size


def _base_bytes(size: int = SIZE, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _memory_base(data: bytes) -> MemoryIO:
    base = MemoryIO(len(data))
    base.pwrite(data, 0)
    return base


def _file_base(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "base.img"
    path.write_bytes(data)
    path.chmod(0o444)  # proves the overlay opens the base read-only
    return path


def _random_writes(seed: int, size: int, count: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    writes = []
    for _ in range(count):
        length = rng.choice([1, 7, 512, 513, 1500, 4096])
        offset = rng.randrange(0, size - length)
        writes.append((offset, rng.randbytes(length)))
    return writes


def _apply(model: bytearray, overlay: Overlay, writes: list[tuple[int, bytes]]) -> None:
    for offset, data in writes:
        overlay.pwrite(data, offset)
        model[offset : offset + len(data)] = data


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_pread_returns_base_with_writes_applied(seed: int) -> None:
    base_data = _base_bytes()
    overlay = Overlay(_memory_base(base_data))
    model = bytearray(base_data)
    _apply(model, overlay, _random_writes(seed, SIZE, 40))
    rng = random.Random(seed + 100)
    for _ in range(200):
        offset = rng.randrange(0, SIZE)
        length = rng.randrange(0, 9000)
        assert overlay.pread(length, offset) == bytes(model[offset : offset + length])


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_ranges_are_sorted_disjoint_coalesced_and_sector_aligned(seed: int) -> None:
    overlay = Overlay(_memory_base(_base_bytes()))
    model = bytearray(_base_bytes())
    _apply(model, overlay, _random_writes(seed, SIZE, 30))
    ranges = overlay.ranges()
    assert ranges
    for (a_off, a_len), (b_off, _b_len) in itertools.pairwise(ranges):
        assert a_off + a_len < b_off  # touching extents would have been merged
    for offset, length in ranges:
        assert offset % 512 == 0
        assert length % 512 == 0 or offset + length == SIZE


def test_every_written_byte_lies_inside_a_range() -> None:
    overlay = Overlay(_memory_base(_base_bytes()))
    writes = _random_writes(8, SIZE, 25)
    _apply(bytearray(_base_bytes()), overlay, writes)
    covered = set()
    for offset, length in overlay.ranges():
        covered.update(range(offset, offset + length))
    for offset, data in writes:
        assert set(range(offset, offset + len(data))) <= covered


@pytest.mark.parametrize(
    ("writes", "expected"),
    [
        ([(0, 512), (512, 512)], ((0, 1024),)),  # adjacent
        ([(100, 10), (300, 10)], ((0, 512),)),  # same sector
        ([(0, 512), (2048, 512)], ((0, 512), (2048, 512))),  # apart
        ([(0, 512), (2048, 512), (256, 2048)], ((0, 2560),)),  # a write bridging two extents
        ([(SIZE - 1, 1)], ((SIZE // 512 * 512, SIZE % 512),)),  # clipped at the end
    ],
)
def test_writes_coalesce_into_extents(
    writes: list[tuple[int, int]], expected: tuple[tuple[int, int], ...]
) -> None:
    overlay = Overlay(_memory_base(_base_bytes()))
    for offset, length in writes:
        overlay.pwrite(b"\xaa" * length, offset)
    assert overlay.ranges() == expected


def test_unaligned_write_keeps_surrounding_base_bytes() -> None:
    base_data = _base_bytes()
    overlay = Overlay(_memory_base(base_data))
    overlay.pwrite(b"XY", 1000)
    [(offset, data)] = list(overlay.extents())
    assert offset == 512
    assert data == base_data[512:1000] + b"XY" + base_data[1002:1024]


@pytest.mark.parametrize("offset", [-1, SIZE - 3, SIZE])
def test_write_outside_the_image_is_refused(offset: int) -> None:
    overlay = Overlay(_memory_base(_base_bytes()))
    with pytest.raises(ValueError, match="exceeds size"):
        overlay.pwrite(b"1234", offset)


def test_base_file_is_never_modified(tmp_path: Path) -> None:
    base_data = _base_bytes()
    path = _file_base(tmp_path, base_data)
    before = path.stat()
    with FileReader(path) as base:
        overlay = Overlay(base)
        _apply(bytearray(base_data), overlay, _random_writes(9, SIZE, 20))
        overlay.sha256()
        overlay.write_to(tmp_path / "out.img")
    after = path.stat()
    assert path.read_bytes() == base_data
    assert after.st_mtime_ns == before.st_mtime_ns
    assert stat.S_IMODE(after.st_mode) == 0o444


@pytest.mark.parametrize("read_size", [1, 511, 4096, 100_000])
def test_reader_streams_the_configured_image(tmp_path: Path, read_size: int) -> None:
    base_data = _base_bytes()
    model = bytearray(base_data)
    with FileReader(_file_base(tmp_path, base_data)) as base:
        overlay = Overlay(base)
        _apply(model, overlay, _random_writes(10, SIZE, 20))
        out = bytearray()
        with overlay.reader() as stream:
            while chunk := stream.read(read_size):
                out += chunk
    assert bytes(out) == bytes(model)


def test_reader_over_a_non_file_base_streams_the_configured_image() -> None:
    model = bytearray(_base_bytes())
    overlay = Overlay(_memory_base(bytes(model)))
    _apply(model, overlay, _random_writes(11, SIZE, 20))
    with io.BufferedReader(overlay.reader(), 8192) as stream:
        assert stream.read() == bytes(model)


def test_reader_seek_and_tell() -> None:
    model = bytearray(_base_bytes())
    overlay = Overlay(_memory_base(bytes(model)))
    _apply(model, overlay, _random_writes(12, SIZE, 10))
    stream = overlay.reader()
    assert stream.seek(-100, os.SEEK_END) == SIZE - 100
    assert stream.read(1000) == bytes(model[-100:])
    stream.seek(5000)
    assert stream.tell() == 5000
    assert stream.read(700) == bytes(model[5000:5700])


def test_sha256_is_the_hash_of_the_configured_image(tmp_path: Path) -> None:
    model = bytearray(_base_bytes())
    with FileReader(_file_base(tmp_path, bytes(model))) as base:
        overlay = Overlay(base)
        _apply(model, overlay, _random_writes(13, SIZE, 20))
        assert overlay.sha256(chunk_bytes=4096) == hashlib.sha256(model).hexdigest()


def test_write_to_produces_the_configured_image(tmp_path: Path) -> None:
    model = bytearray(_base_bytes())
    out = tmp_path / "out.img"
    with FileReader(_file_base(tmp_path, bytes(model))) as base:
        overlay = Overlay(base)
        _apply(model, overlay, _random_writes(14, SIZE, 20))
        overlay.write_to(out)
    assert out.read_bytes() == bytes(model)
    assert not list(tmp_path.glob("*.part"))


def test_write_to_keeps_holes_sparse(tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    base_path = tmp_path / "sparse.img"
    with base_path.open("wb") as f:
        f.truncate(size)
        f.seek(8 * 1024 * 1024)
        f.write(b"data" * 1024)
        f.seek(40 * 1024 * 1024)
        f.write(bytes(8 * 1024 * 1024))  # allocated, but all zeros
    out = tmp_path / "out.img"
    with FileReader(base_path) as base:
        overlay = Overlay(base)
        overlay.pwrite(b"patch", 30 * 1024 * 1024)
        overlay.write_to(out)
        expected = overlay.sha256()
    assert out.stat().st_size == size
    assert out.stat().st_blocks * 512 < 1024 * 1024
    assert hashlib.sha256(out.read_bytes()).hexdigest() == expected


def test_apply_in_place_turns_a_copy_of_the_base_into_the_configured_image(
    tmp_path: Path,
) -> None:
    model = bytearray(_base_bytes())
    copy = tmp_path / "copy.img"
    copy.write_bytes(bytes(model))
    overlay = Overlay(_memory_base(bytes(model)))
    _apply(model, overlay, _random_writes(15, SIZE, 20))
    with FileReadWriter(copy) as rw:
        overlay.apply_in_place(rw)
    assert copy.read_bytes() == bytes(model)


def test_apply_in_place_refuses_a_target_of_another_size(tmp_path: Path) -> None:
    copy = tmp_path / "copy.img"
    copy.write_bytes(bytes(SIZE + 512))
    overlay = Overlay(_memory_base(_base_bytes()))
    overlay.pwrite(b"x", 0)
    with FileReadWriter(copy) as rw, pytest.raises(ValueError, match="bytes"):
        overlay.apply_in_place(rw)


def test_many_appending_writes_build_one_extent() -> None:
    base = _memory_base(bytes(8 * 1024 * 1024))
    overlay = Overlay(base)
    cluster = b"\x5a" * 4096
    for i in range(2048):
        overlay.pwrite(cluster, i * 4096)
    assert overlay.ranges() == ((0, 8 * 1024 * 1024),)
    assert overlay.pread(4096, 4096 * 2047) == cluster


@pytest.mark.parametrize("read_size", [4096, 1_000_003, 8 * 1024 * 1024])
def test_reader_fills_holes_of_a_sparse_base_with_zeros(tmp_path: Path, read_size: int) -> None:
    size = 24 * 1024 * 1024 + 777
    path = tmp_path / "sparse.img"
    rng = random.Random(read_size)
    islands = [(0, 4096), (3 * 1024 * 1024 + 5, 70_000), (20 * 1024 * 1024, 1 * 1024 * 1024)]
    model = bytearray(size)
    with path.open("wb") as f:
        f.truncate(size)
        for offset, length in islands:
            data = rng.randbytes(length)
            f.seek(offset)
            f.write(data)
            model[offset : offset + length] = data
    with FileReader(path) as base:
        overlay = Overlay(base)
        overlay.pwrite(b"\xff" * 3000, 10 * 1024 * 1024 - 1000)  # patch inside a hole
        model[10 * 1024 * 1024 - 1000 : 10 * 1024 * 1024 + 2000] = b"\xff" * 3000
        out = bytearray()
        with overlay.reader() as stream:
            stream.seek(1)
            out += b"?"  # byte 0 is read again below, after a backwards seek
            while chunk := stream.read(read_size):
                out += chunk
            stream.seek(0)
            out[0:1] = stream.read(1)
    assert bytes(out) == bytes(model)
