"""Many targets in one job: smaller I/O pieces keep the helper's memory bounded, while the job's
sha256 and every card's bytes stay those of a one-target job."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import BinaryIO

import pytest

from flasher.drives.discovery import find_drive
from flasher.errors import VerificationFailed
from flasher.models import Drive
from flasher.writer import engine
from flasher.writer.blockdev import BlockDevicePolicy
from flasher.writer.client import ImageFeed, verify_image, write_image
from flasher.writer.launchers import InProcessLauncher
from flasher.writer.plan import WRITE_BUFFERS_BUDGET_BYTES, piece_bytes_for
from tests.support.loopdev import LoopDevice, LoopDevices

MiB = 1024 * 1024
IMAGE_BYTES = 22 * MiB + 512  # not a multiple of 4 KiB: the last piece is padded
OVERLAY = ((6000, b"config.json was here"), (7 * MiB - 10, b"Y" * 40000))
# Mapped ranges that start and end inside 4 MiB chunks, so chunks hold partial pieces.
RANGES = [(0, 2 * MiB + 4096), (5 * MiB + 8192, 6 * MiB), (13 * MiB, IMAGE_BYTES - 13 * MiB)]
MANY = 8


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("many") / "image.img"
    path.write_bytes(random.Random(11).randbytes(IMAGE_BYTES))
    return path, path.read_bytes()


def _expected(raw: bytes, card: bytes) -> bytes:
    """The card's bytes after a job: the image (with overlay) in the mapped ranges, zeros in
    the card's last MiB (erased), `card` elsewhere."""
    out = bytearray(card)
    out[-MiB:] = bytes(MiB)
    prepared = bytearray(raw)
    for offset, patch in OVERLAY:
        prepared[offset : offset + len(patch)] = patch
    for offset, length in [*RANGES, *((o, len(p)) for o, p in OVERLAY)]:
        out[offset : offset + length] = prepared[offset : offset + length]
    return bytes(out)


class _Stream(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), len(self._data) - self._pos)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def _feed(kind: str, path: Path, raw: bytes) -> ImageFeed:
    if kind == "fd":
        return ImageFeed.from_file(path, overlay=OVERLAY)

    def open_stream() -> BinaryIO:
        return io.BufferedReader(_Stream(raw))

    return ImageFeed.from_stream(open_stream, len(raw), overlay=OVERLAY)


def _drive(loop: LoopDevice) -> Drive:
    drive = find_drive(loop.path)
    assert drive is not None
    return drive


def test_many_targets_take_smaller_pieces_of_the_same_chunks() -> None:
    one = piece_bytes_for(1, 4 * MiB, engine.PREFETCH_DEPTH)
    many = piece_bytes_for(MANY, 4 * MiB, engine.PREFETCH_DEPTH)
    assert one == 4 * MiB
    assert many < one and (4 * MiB) % many == 0
    assert MANY * engine.PREFETCH_DEPTH * many <= WRITE_BUFFERS_BUDGET_BYTES


@pytest.mark.root
@pytest.mark.parametrize("kind", ["fd", "stream"])
def test_one_and_many_targets_report_the_same_sha256_and_write_the_same_bytes(
    loops: LoopDevices, image: tuple[Path, bytes], kind: str
) -> None:
    path, raw = image
    card = random.Random(3).randbytes(24 * MiB)
    launcher = InProcessLauncher(BlockDevicePolicy())

    def run(count: int) -> tuple[list[str | None], list[LoopDevice]]:
        cards = [loops.create(24 * MiB) for _ in range(count)]
        for loop in cards:
            loop.poke(0, card)
        results = write_image(
            _feed(kind, path, raw), [_drive(c) for c in cards], ranges=RANGES, launcher=launcher
        )
        assert all(r.ok and r.verified for r in results), [r.error for r in results]
        return [r.sha256 for r in results], cards

    (single,), (alone,) = run(1)
    many, cards = run(MANY)
    assert single is not None
    assert many == [single] * MANY
    wanted = _expected(raw, card)
    assert alone.read(0, 24 * MiB) == wanted
    for loop in cards:
        assert loop.read(0, 24 * MiB) == wanted


@pytest.mark.root
def test_many_targets_verify_only_finds_the_flipped_byte(
    loops: LoopDevices, image: tuple[Path, bytes]
) -> None:
    path, raw = image
    cards = [loops.create(24 * MiB) for _ in range(MANY)]
    drives = [_drive(c) for c in cards]
    feed = _feed("fd", path, raw)
    launcher = InProcessLauncher(BlockDevicePolicy())
    (first, *_rest) = write_image(feed, drives[:1], ranges=RANGES, launcher=launcher)
    written = write_image(feed, drives, ranges=RANGES, launcher=launcher)
    flipped = 13 * MiB + 3 * MiB // 2
    cards[-1].poke(flipped, bytes([cards[-1].read(flipped, 1)[0] ^ 0x10]))
    *good, bad = verify_image(feed, drives, ranges=RANGES, launcher=launcher)
    assert all(r.ok and r.sha256 == first.sha256 for r in [*written, *good])
    assert isinstance(bad.error, VerificationFailed)
    assert bad.error.offset == flipped
