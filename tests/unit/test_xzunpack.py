"""Unpacking a multi-block .xz into a file: every block straight to its offset on its own
thread, reported in file order; bad blocks, cancelling, write failures and the bounds."""

from __future__ import annotations

import os
import random
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from flasher.errors import Cancelled, ImageError
from flasher.image import decoders, xzunpack
from flasher.image.byteio import write_data_runs
from flasher.image.sources import open_source
from flasher.image.xzparallel import XzPlan
from tests.support import xzfiles
from tests.support.images import require_tools

BLOCK_BYTES = xzfiles.BLOCK_BYTES
MiB = xzfiles.MiB
Extents = list[tuple[int, int]]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the disk, its multi-block .xz)."""
    require_tools("xz")
    folder = tmp_path_factory.mktemp("xzunpack")
    disk = xzfiles.write_disk(folder / "disk.img")
    return disk, xzfiles.make_xz(folder, disk, *xzfiles.multi_block_args())


class Unpacking:
    """One `unpack_blocks` run into a new file, recording its steps."""

    def __init__(self, path: Path, out: Path, workers: int = 2) -> None:
        self.path, self.out, self.workers = path, out, workers
        self.steps: list[tuple[int, Extents]] = []
        self.fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def write(self, piece: bytes, offset: int) -> Extents:
        return write_data_runs(self.fd, piece, offset)

    def step(self, end: int, written: Extents) -> None:
        self.steps.append((end, written))

    def run(self, plan: XzPlan | None = None, **kwargs: object) -> int:
        kwargs.setdefault("write", self.write)
        kwargs.setdefault("step", self.step)
        try:
            with open(self.path, "rb") as f:
                return xzunpack.unpack_blocks(
                    decoders.Input(f),
                    str(self.path),
                    plan or xzfiles.plan_of(self.path),
                    self.workers,
                    pread=decoders.file_pread(f.fileno()),
                    **kwargs,  # type: ignore[arg-type]
                )
        finally:
            os.close(self.fd)


def _xz_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("xz-unpack")]


def test_the_file_gets_the_decoded_bytes_with_zero_blocks_left_as_holes(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    disk, xz = files
    out = tmp_path / "out.img"
    job = Unpacking(xz, out)
    size = job.run()
    os.truncate(out, size)
    assert size == disk.stat().st_size
    assert out.read_bytes() == disk.read_bytes()
    # the steps: one per block, in file order, each past the blocks before it
    ends = [end for end, _ in job.steps]
    assert ends == [min(size, BLOCK_BYTES * (n + 1)) for n in range(len(ends))]
    # what the steps report written is exactly the non-zero 4 KiB blocks, each within its block
    data = disk.read_bytes()
    reported = set()
    previous = 0
    for end, written in job.steps:
        for offset, length in written:
            assert previous <= offset and offset + length <= end
            reported.update(range(offset // 4096, (offset + length + 4095) // 4096))
        previous = end
    nonzero = {n for n in range(-(-size // 4096)) if any(data[n * 4096 : (n + 1) * 4096])}
    assert reported == nonzero
    assert os.stat(out).st_blocks * 512 < size  # the zero regions stayed holes
    assert not _xz_threads()


def test_blocks_are_written_while_an_earlier_step_is_held(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A follower that is slow to take the first block does not stop the later blocks from
    being decoded and written, up to the bound past the first block not yet reported."""
    _disk, xz = files
    writes: list[int] = []
    release = threading.Event()
    job = Unpacking(xz, tmp_path / "out.img", workers=2)

    def write(piece: bytes, offset: int) -> Extents:
        writes.append(offset // BLOCK_BYTES)
        return job.write(piece, offset)

    def step(end: int, written: Extents) -> None:
        if end == BLOCK_BYTES:
            assert release.wait(10)
        job.step(end, written)

    runner = threading.Thread(target=job.run, kwargs={"write": write, "step": step})
    runner.start()
    deadline = time.monotonic() + 10
    ahead = xzunpack.AHEAD_PER_WORKER * job.workers  # block 0 included
    while len(set(writes)) < min(ahead, len(xzfiles.plan_of(xz).streams[0].blocks)):
        assert time.monotonic() < deadline, f"only blocks {sorted(set(writes))} were written"
        time.sleep(0.01)
    time.sleep(0.1)
    assert max(writes) < ahead  # no further: the bound holds while block 0 waits
    assert job.steps == []
    release.set()
    runner.join(10)
    assert [end for end, _ in job.steps][-1] == xz_size(xz)


def xz_size(path: Path) -> int:
    uncompressed = open_source(path).uncompressed_size
    assert uncompressed is not None
    return uncompressed


def test_a_bad_block_is_corrupt_after_the_blocks_before_it_are_reported(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    _disk, xz = files
    offset, block = xzfiles.block_offsets(xzfiles.plan_of(xz))[5]
    data = bytearray(xz.read_bytes())
    data[offset + block.unpadded_bytes - 8] ^= 0x01  # the first byte of its CRC-64
    bad = tmp_path / "bad.img.xz"
    bad.write_bytes(bytes(data))
    job = Unpacking(bad, tmp_path / "out.img")
    with pytest.raises(ImageError) as caught:
        job.run()
    assert caught.value.problem == "corrupt"
    assert f"block 5 at byte {offset} fails its CRC-64 check" in str(caught.value)
    assert [end for end, _ in job.steps] == [BLOCK_BYTES * n for n in range(1, 6)]
    assert not _xz_threads()


def test_a_cut_file_is_truncated(files: tuple[Path, Path], tmp_path: Path) -> None:
    _disk, xz = files
    cut = tmp_path / "cut.img.xz"
    data = xz.read_bytes()
    cut.write_bytes(data[:-4])
    job = Unpacking(cut, tmp_path / "out.img")
    with pytest.raises(ImageError) as caught:
        # planned from the whole file: the cut shows when the reader gets to the end
        job.run(plan=xzfiles.plan_of(xz))
    assert caught.value.problem == "truncated"
    assert len(job.steps) == len(xzfiles.plan_of(xz).streams[0].blocks)


def test_cancelling_stops_every_thread_with_cancelled(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    _disk, xz = files
    stop = threading.Event()
    job = Unpacking(xz, tmp_path / "out.img")

    def write(piece: bytes, offset: int) -> Extents:
        if offset >= 3 * BLOCK_BYTES:
            stop.set()
        return job.write(piece, offset)

    with pytest.raises(Cancelled):
        job.run(write=write, cancelled=stop.is_set)
    assert len(job.steps) < len(xzfiles.plan_of(xz).streams[0].blocks)
    assert not _xz_threads()


def test_a_failing_write_is_raised_and_stops_the_threads(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    _disk, xz = files
    job = Unpacking(xz, tmp_path / "out.img")

    def write(piece: bytes, offset: int) -> Extents:
        if offset >= 2 * BLOCK_BYTES:
            raise OSError(28, "No space left on device")
        return job.write(piece, offset)

    with pytest.raises(OSError, match="No space left"):
        job.run(write=write)
    assert [end for end, _ in job.steps] == [BLOCK_BYTES, 2 * BLOCK_BYTES]
    assert not _xz_threads()


def test_a_failing_step_stops_the_threads(files: tuple[Path, Path], tmp_path: Path) -> None:
    _disk, xz = files
    job = Unpacking(xz, tmp_path / "out.img")

    def step(end: int, written: Extents) -> None:
        raise Cancelled()

    with pytest.raises(Cancelled):
        job.run(step=step)
    assert not _xz_threads()


def test_unpack_to_takes_this_path_for_a_multi_block_file(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk, xz = files
    calls: list[int] = []
    real = xzunpack.unpack_blocks

    def counting(*args: object, **kwargs: object) -> int:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(xzunpack, "unpack_blocks", counting)
    monkeypatch.setattr("flasher.image.xzparallel.worker_count", lambda: 2)
    out = tmp_path / "unpacked.img"
    assert open_source(xz).unpack_to(out) == disk.stat().st_size
    assert out.read_bytes() == disk.read_bytes()
    assert calls == [1]


def test_threads_hold_small_pieces_of_large_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of 16 MiB decode in PIECE_BYTES pieces: what two threads hold stays small."""
    rng = random.Random(5)
    disk = tmp_path / "big.img"
    words = [rng.randbytes(64) for _ in range(256)]
    disk.write_bytes(b"".join(rng.choice(words) for _ in range(48 * MiB // 64)))
    xz = xzfiles.make_xz(tmp_path, disk, "-T2", f"--block-size={16 * MiB}")
    monkeypatch.setattr("flasher.image.xzparallel.worker_count", lambda: 2)
    out = tmp_path / "unpacked.img"
    tracemalloc.start()
    try:
        assert open_source(xz).unpack_to(out) == 48 * MiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.read_bytes() == disk.read_bytes()
    # Two threads, each with liblzma's 4 MiB dictionary (xz -3), the input it holds and one
    # piece: 16.8 MiB with 1 MiB pieces (or 256 KiB ones); 25.6 MiB with 4 MiB pieces.
    assert peak < 20 * MiB


def test_a_block_still_waiting_for_a_thread_when_the_last_is_handed_out_is_decoded(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """With every thread busy (slow writes), the last blocks wait in the pool's queue after
    the feeding thread has handed out the last one: they are decoded all the same."""
    disk, xz = files
    out = tmp_path / "out.img"
    job = Unpacking(xz, out)

    def slow(piece: bytes, offset: int) -> Extents:
        time.sleep(0.02)
        return job.write(piece, offset)

    size = job.run(write=slow)
    os.truncate(out, size)
    assert out.read_bytes() == disk.read_bytes()


def test_the_first_block_not_yet_reported_is_reported_piece_by_piece(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Followers see the block at the front as it is written, not once it is whole."""
    _disk, xz = files
    piece = 64 * 1024
    monkeypatch.setattr(xzunpack, "PIECE_BYTES", piece)
    job = Unpacking(xz, tmp_path / "out.img", workers=2)
    second_piece = threading.Event()
    release = threading.Event()

    def write(data: bytes, offset: int) -> Extents:
        assert len(data) <= piece
        if offset == piece:  # block 0's second piece waits until its first is reported
            second_piece.set()
            assert release.wait(10)
        return job.write(data, offset)

    runner = threading.Thread(target=job.run, kwargs={"write": write})
    runner.start()
    assert second_piece.wait(10)
    deadline = time.monotonic() + 10
    while not job.steps:
        assert time.monotonic() < deadline, "block 0's first piece was not reported"
        time.sleep(0.01)
    assert job.steps[0][0] == piece
    release.set()
    runner.join(10)
    ends = [end for end, _ in job.steps]
    assert ends == sorted(ends) and ends[-1] == xz_size(xz)
    assert len(ends) == -(-xz_size(xz) // piece)


def test_a_block_cut_short_is_truncated_after_the_blocks_before_it(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Each thread reads its block's bytes by position: where the file ends inside block 5,
    blocks 0-4 are reported, then what block 5 decoded up to the cut, then the cut."""
    _disk, xz = files
    plan = xzfiles.plan_of(xz)
    offset, block = xzfiles.block_offsets(plan)[5]
    cut = tmp_path / "cut5.img.xz"
    cut.write_bytes(xz.read_bytes()[: offset + block.stored_bytes // 2])
    job = Unpacking(cut, tmp_path / "out.img")
    with pytest.raises(ImageError) as caught:
        job.run(plan=plan)
    assert caught.value.problem == "truncated"
    assert "the xz file ends inside block 5" in str(caught.value)
    ends = [end for end, _ in job.steps]
    assert ends[:5] == [BLOCK_BYTES * n for n in range(1, 6)]
    assert all(5 * BLOCK_BYTES < end < 6 * BLOCK_BYTES for end in ends[5:])  # what it decoded
    assert not _xz_threads()
