"""Parallel .xz decoding: identical bytes to liblzma for every check type, per-block checks,
truncation, concatenated streams, the sequential fallback and the memory bounds."""

from __future__ import annotations

import lzma
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flasher.errors import ImageError
from flasher.image import decoders, xzparallel
from flasher.image.sources import open_source
from tests.support import xzfiles
from tests.support.images import require_tools

Output = xzparallel._BlockOutput
CHECKS = xzfiles.CHECK_BYTES
BLOCK_BYTES = xzfiles.BLOCK_BYTES


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return xzfiles.write_disk(tmp_path_factory.mktemp("xzdisk") / "disk.img")


@pytest.fixture(scope="module")
def make_xz(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    require_tools("xz")
    folder = tmp_path_factory.mktemp("xz")
    return lambda source, *args: xzfiles.make_xz(folder, source, *args)


def _multi_block(make_xz: Callable[..., Path], disk: Path, check: str = "crc64") -> Path:
    return make_xz(disk, *xzfiles.multi_block_args(check))


def _stream(path: Path) -> bytes:
    with open_source(path).open_stream() as stream:
        return stream.read()


_plan = xzfiles.plan_of
_block_offsets = xzfiles.block_offsets


@pytest.mark.parametrize("check", list(CHECKS))
def test_multi_block_file_decodes_to_the_same_bytes_as_liblzma(
    disk: Path, make_xz: Callable[..., Path], check: str
) -> None:
    path = _multi_block(make_xz, disk, check)
    plan = _plan(path)
    assert plan.blocks == -(-disk.stat().st_size // BLOCK_BYTES)
    assert plan.streams[0].check_id == {"none": 0, "crc32": 1, "crc64": 4, "sha256": 10}[check]
    assert _stream(path) == lzma.decompress(path.read_bytes()) == disk.read_bytes()


def test_multi_block_file_is_decoded_in_parallel(
    disk: Path, make_xz: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real = xzparallel._decode_block

    def counting(header: bytes, block: xzparallel.XzBlock, data: list[bytes], out: Output) -> None:
        decoded.append(block.uncompressed_bytes)
        real(header, block, data, out)

    path = _multi_block(make_xz, disk)
    source = open_source(path)
    monkeypatch.setattr(xzparallel, "_decode_block", counting)
    monkeypatch.setattr(xzparallel, "worker_count", lambda: 2)
    with source.open_stream() as stream:
        assert stream.read() == disk.read_bytes()
    assert sum(decoded) == disk.stat().st_size
    assert len(decoded) == _plan(path).blocks


def test_one_block_file_takes_the_sequential_decoder(
    disk: Path, make_xz: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_xz(disk)  # single-threaded xz writes one block
    assert _plan(path).blocks == 1
    monkeypatch.setattr(xzparallel, "_decode_block", None)  # would fail if called
    assert _stream(path) == disk.read_bytes()


def test_blocks_above_the_size_cap_take_the_sequential_decoder(
    disk: Path, make_xz: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(xzparallel, "MAX_BLOCK_BYTES", BLOCK_BYTES - 1)
    monkeypatch.setattr(xzparallel, "_decode_block", None)
    assert _stream(_multi_block(make_xz, disk)) == disk.read_bytes()


@pytest.mark.parametrize("check", ["crc32", "crc64", "sha256"])
def test_a_wrong_block_check_is_corrupt_and_names_the_block(
    disk: Path, make_xz: Callable[..., Path], check: str, tmp_path: Path
) -> None:
    path = _multi_block(make_xz, disk, check)
    offset, block = _block_offsets(_plan(path))[5]
    data = bytearray(path.read_bytes())
    data[offset + block.unpadded_bytes - CHECKS[check]] ^= 0x01  # first byte of the check
    bad = tmp_path / "badcheck.img.xz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError) as caught:
        _stream(bad)
    assert caught.value.problem == "corrupt"
    check_name = {"crc32": "CRC-32", "crc64": "CRC-64", "sha256": "SHA-256"}[check]
    assert f"block 5 at byte {offset} fails its {check_name} check" in str(caught.value)
    assert str(bad) in str(caught.value)


def test_corrupt_compressed_data_is_corrupt(
    disk: Path, make_xz: Callable[..., Path], tmp_path: Path
) -> None:
    path = _multi_block(make_xz, disk)
    offset, block = _block_offsets(_plan(path))[4]
    data = bytearray(path.read_bytes())
    middle = offset + block.unpadded_bytes // 2
    data[middle : middle + 8] = bytes(b ^ 0x5A for b in data[middle : middle + 8])
    bad = tmp_path / "baddata.img.xz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError) as caught:
        _stream(bad)
    assert caught.value.problem == "corrupt"


@pytest.mark.parametrize("keep", [0.5, "all-but-4"])
def test_a_cut_multi_block_file_is_truncated(
    disk: Path, make_xz: Callable[..., Path], keep: float | str, tmp_path: Path
) -> None:
    data = _multi_block(make_xz, disk).read_bytes()
    cut = tmp_path / "cut.img.xz"
    cut.write_bytes(data[: int(len(data) * keep)] if isinstance(keep, float) else data[:-4])
    with pytest.raises(ImageError) as caught:
        _stream(cut)
    assert caught.value.problem == "truncated"


def test_concatenated_multi_block_streams_with_padding_decode_as_one(
    disk: Path, make_xz: Callable[..., Path], tmp_path: Path
) -> None:
    one = _multi_block(make_xz, disk).read_bytes()
    other = _multi_block(make_xz, disk, "sha256").read_bytes()
    both = tmp_path / "both.img.xz"
    both.write_bytes(one + bytes(8) + other + bytes(4))
    plan = _plan(both)
    assert [s.padding_bytes for s in plan.streams] == [8, 4]
    assert _stream(both) == disk.read_bytes() * 2


def test_garbage_after_the_last_stream_is_corrupt(
    disk: Path, make_xz: Callable[..., Path], tmp_path: Path
) -> None:
    bad = tmp_path / "tail.img.xz"
    bad.write_bytes(_multi_block(make_xz, disk).read_bytes() + b"garbage!")
    with pytest.raises(ImageError) as caught:
        _stream(bad)
    assert caught.value.problem == "corrupt"


def test_blocks_decoded_ahead_of_a_slow_reader_stay_within_the_budget(
    disk: Path, make_xz: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = [0]
    real = xzparallel._decode_block

    def counting(header: bytes, block: xzparallel.XzBlock, data: list[bytes], out: Output) -> None:
        started[0] += 1
        real(header, block, data, out)

    monkeypatch.setattr(xzparallel, "_decode_block", counting)
    monkeypatch.setattr(xzparallel, "LOOKAHEAD_BUDGET_BYTES", BLOCK_BYTES)
    workers = 4
    path = _multi_block(make_xz, disk)
    plan = _plan(path)
    with open(path, "rb") as f:
        chunks = xzparallel.parallel_xz_chunks(decoders.Input(f), str(path), plan, workers)
        ahead, consumed = [], 0
        for chunk in chunks:
            assert len(chunk) <= BLOCK_BYTES  # one block per chunk here
            time.sleep(0.02)  # a slow reader: every started block has time to finish
            ahead.append(started[0] - consumed)
            consumed += 1
    assert consumed == plan.blocks > 2 * (1 + workers)
    # the block being read, plus blocks decoding at once while the finished ones hold less
    # than the budget (one block here)
    assert max(ahead) <= 1 + workers


def test_the_block_being_read_streams_through_a_few_pieces() -> None:
    out = Output()
    pieces = [bytes([n]) * 1000 for n in range(10)]

    def produce() -> None:
        for piece in pieces:
            out.put(piece)
        out.finish()

    reader = out.read(2)
    producer = threading.Thread(target=produce)
    producer.start()
    got = [next(reader)]
    time.sleep(0.2)
    assert out.held_bytes <= 2 * 1000
    assert producer.is_alive()  # waiting for the reader
    got += list(reader)
    producer.join()
    assert got == pieces


def test_a_block_decoder_that_dies_fails_the_read_instead_of_hanging(
    disk: Path, make_xz: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def dying(header: bytes, block: xzparallel.XzBlock, data: list[bytes], out: Output) -> None:
        raise MemoryError("no memory for the block")

    monkeypatch.setattr(xzparallel, "_decode_block", dying)
    path = _multi_block(make_xz, disk)
    with open(path, "rb") as f:
        chunks = xzparallel.parallel_xz_chunks(decoders.Input(f), str(path), _plan(path), 2)
        with pytest.raises(MemoryError, match="no memory for the block"):
            next(chunks)


def test_sniffing_decodes_only_the_first_block(
    disk: Path, make_xz: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real = xzparallel._decode_block

    def counting(header: bytes, block: xzparallel.XzBlock, data: list[bytes], out: Output) -> None:
        decoded.append(block.uncompressed_bytes)
        real(header, block, data, out)

    monkeypatch.setattr(xzparallel, "_decode_block", counting)
    assert open_source(_multi_block(make_xz, disk)).uncompressed_size == disk.stat().st_size
    assert decoded == [BLOCK_BYTES]
