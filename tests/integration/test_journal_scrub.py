"""Journal scrubbing end to end on real loop devices: the zero journal bodies of a balenaOS
image are not written but scanned on the card, so a card that held random data still checks
clean file for file, and a card that held a previous life's journal blocks gets them zeroed,
reported and verified; through a plain flash, a flash that follows a .gz being decoded, and a
bench station's shared helper session."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from flasher.cache import ImageCache
from flasher.image.byteio import FileReader
from flasher.image.partitions import read_partition_table
from flasher.image.sparse import allocation_map
from flasher.pipeline import prepare, resolve_target, write
from flasher.provider import ImageProvider, SourceSpec
from flasher.writer.client import TargetResult
from flasher.writer.launchers import DirectLauncher, Launcher
from flasher.writer.shared import SharedHelper
from tests.conftest import ImageFactory
from tests.support.filesystems import extract, partition_readback, run
from tests.support.images import BuiltImage, BuiltPartition
from tests.support.loopdev import LoopDevice, LoopDevices

MiB = 1024 * 1024
BLOCK = 4096
JBD2_MAGIC = bytes.fromhex("c03b3998")
# A jbd2 descriptor block's header: magic, block type 1 (descriptor), a transaction sequence.
DESCRIPTOR = JBD2_MAGIC + (1).to_bytes(4, "big") + (2).to_bytes(4, "big")

pytestmark = pytest.mark.root


@pytest.fixture
def image(mbr_image: ImageFactory) -> BuiltImage:
    return mbr_image()


def _random_card(loops: LoopDevices, image: BuiltImage) -> LoopDevice:
    return loops.create(image.size_bytes + 8 * MiB, fill=random.Random(11).randbytes(MiB))


def _scrub_ranges(path: Path) -> tuple[tuple[int, int], ...]:
    with FileReader(path) as io:
        return allocation_map(io, read_partition_table(io, name=str(path))).scrub


def _plant_previous_life(card: LoopDevice, image: BuiltImage) -> list[int]:
    """Write jbd2 descriptor headers into journal body blocks of every ext4 filesystem on the
    card, as an older flash of this image would have left them; their offsets."""
    planted = []
    for offset, length in _scrub_ranges(image.path):
        for block in (offset, offset + length // 2 // BLOCK * BLOCK, offset + length - BLOCK):
            card.poke(block, DESCRIPTOR + random.Random(block).randbytes(BLOCK - 12))
            planted.append(block)
    return planted


def _flash(
    source: Path, card: LoopDevice, cache: Path, *, launcher: Launcher | None = None, **kw: bool
) -> tuple[TargetResult, int]:
    """Flash `source` to `card` through prepare/write; the result and the job's scrub bytes."""
    provider = ImageProvider(ImageCache(cache))
    with prepare(SourceSpec(path=str(source)), provider, **kw) as job:
        (result,) = write(job, [resolve_target(card.path)], launcher=launcher).results
        scrub_bytes = job.scrub_bytes
    assert result.ok and result.verified, result.error
    return result, scrub_bytes


def _ext4_parts(image: BuiltImage) -> list[BuiltPartition]:
    return [p for p in image.partitions if p.fs == "ext4"]


def _readback(disk: Path, part: BuiltPartition, work: Path) -> tuple[int, dict[str, bytes | None]]:
    return partition_readback(
        disk, part.number, part.start_bytes, part.size_bytes, ext4=part.fs == "ext4", work=work
    )


def _journal_blocks_starting_with_magic(
    card: LoopDevice, part: BuiltPartition, work: Path
) -> list[int]:
    """Logical numbers of the journal blocks on the card that start with the jbd2 magic."""
    fs = extract(card.backing, part.start_bytes, part.size_bytes, work / f"j{part.number}.fs")
    stat = run(["debugfs", "-R", "stat <8>", fs]).stdout.decode().split("EXTENTS:", 1)[1]
    fs.unlink()
    found = []
    for first, last, start in re.findall(r"\((\d+)(?:-(\d+))?\):(\d+)", stat):
        for i in range(int(last or first) - int(first) + 1):
            offset = part.start_bytes + (int(start) + i) * BLOCK
            if card.read(offset, 4) == JBD2_MAGIC:
                found.append(int(first) + i)
    return found


def test_a_card_of_random_data_checks_clean_with_every_file(
    image: BuiltImage, loops: LoopDevices, tmp_path: Path
) -> None:
    card = _random_card(loops, image)
    result, scrub_bytes = _flash(image.path, card, tmp_path / "cache")
    assert scrub_bytes > 0 and result.scanned_bytes == scrub_bytes
    for part in image.partitions:
        if part.fs == "extended":
            continue
        original = _readback(image.path, part, tmp_path / "original")
        assert original[0] == 0, part.label
        assert _readback(card.backing, part, tmp_path / "card") == original, part.label


def test_a_previous_lifes_journal_blocks_are_zeroed_reported_and_verified(
    image: BuiltImage, loops: LoopDevices, tmp_path: Path
) -> None:
    card = _random_card(loops, image)
    planted = _plant_previous_life(card, image)
    result, _ = _flash(image.path, card, tmp_path / "cache")
    assert result.zeroed_blocks == len(planted)
    assert all(card.read(offset, BLOCK) == bytes(BLOCK) for offset in planted)
    for part in _ext4_parts(image):
        assert _journal_blocks_starting_with_magic(card, part, tmp_path) == [0], part.label
        code, _ = _readback(card.backing, part, tmp_path / "card")
        assert code == 0, part.label


def test_a_flash_that_follows_a_gz_decoding_scrubs_too(
    image: BuiltImage,
    loops: LoopDevices,
    compressed_image: Callable[[Path, str], Path],
    tmp_path: Path,
) -> None:
    card = _random_card(loops, image)
    planted = _plant_previous_life(card, image)
    source = compressed_image(image.path, "gz")
    provider = ImageProvider(ImageCache(tmp_path / "cache"))
    with prepare(SourceSpec(path=str(source)), provider, one_flash=True) as job:
        assert job.image.feed.growth is not None  # written while decoded
        (result,) = write(job, [resolve_target(card.path)]).results
    assert result.ok and result.verified, result.error
    assert result.zeroed_blocks == len(planted)
    assert result.scanned_bytes == sum(n for _off, n in _scrub_ranges(image.path))
    for part in _ext4_parts(image):
        assert _journal_blocks_starting_with_magic(card, part, tmp_path) == [0], part.label


def test_a_bench_station_session_scrubs_each_card(
    image: BuiltImage, loops: LoopDevices, tmp_path: Path
) -> None:
    shared = SharedHelper(DirectLauncher())
    try:
        cards = [_random_card(loops, image) for _ in range(2)]
        planted = [_plant_previous_life(card, image) for card in cards]
        results = [
            _flash(image.path, card, tmp_path / "cache", launcher=shared)[0] for card in cards
        ]
    finally:
        shared.close()
    assert shared.started == 1
    assert [r.zeroed_blocks for r in results] == [len(p) for p in planted]
    for card in cards:
        for part in _ext4_parts(image):
            assert _journal_blocks_starting_with_magic(card, part, tmp_path) == [0], part.label
