"""Journal scrubbing end to end on real loop devices: the zero journal bodies of a balenaOS
image are not written but scanned on the card, so a card that held random data still checks
clean file for file, and a card that held a previous life's journal blocks gets them zeroed,
reported and verified; through a plain flash, a flash that follows a .gz being decoded, and a
bench station's shared helper session. The zero gaps between partitions are not written either:
the card's partition table still reads back as the image's, and data put in a gap arrives."""

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
from tests.support.filesystems import (
    extract,
    partition_readback,
    patch_bytes,
    run,
    sfdisk_dump,
)
from tests.support.images import BuiltImage, BuiltPartition, copy_image
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
    """Flash `source` to `card` through prepare/write; the result and the job's scrub bytes
    (with `one_flash`, a compressed source is written while it is decoded)."""
    provider = ImageProvider(ImageCache(cache))
    with prepare(SourceSpec(path=str(source)), provider, **kw) as job:
        assert (job.image.feed.growth is not None) == kw.get("one_flash", False)
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


def _with_data_in_the_gaps(image: BuiltImage, work: Path) -> tuple[BuiltImage, list[int]]:
    """A copy of `image` with a few bytes put in the gaps inside its extended partition; the
    4 KiB blocks they went to."""
    copy = copy_image(image, work)
    start = _extended(image).start_bytes
    writes = [(start + MiB + 100, b"in the first gap"), (start + 3 * MiB - 8, b"two blocks")]
    for offset, data in writes:
        patch_bytes(copy.path, offset, data)
    return copy, [start + MiB, start + 3 * MiB - BLOCK, start + 3 * MiB]


@pytest.mark.parametrize("follow", [False, True], ids=["raw", "follow-gz"])
def test_a_card_of_random_data_checks_clean_with_every_file(
    image: BuiltImage,
    loops: LoopDevices,
    compressed_image: Callable[[Path, str], Path],
    tmp_path: Path,
    follow: bool,
) -> None:
    image, data_blocks = _with_data_in_the_gaps(image, tmp_path / "image")
    card = _random_card(loops, image)
    if follow:
        source = compressed_image(image.path, "gz")
        result, scrub_bytes = _flash(source, card, tmp_path / "cache", one_flash=True)
    else:
        result, scrub_bytes = _flash(image.path, card, tmp_path / "cache")
    assert scrub_bytes > 0 and result.scanned_bytes == scrub_bytes
    for part in image.partitions:
        if part.fs == "extended":
            continue
        original = _readback(image.path, part, tmp_path / "original")
        assert original[0] == 0, part.label
        assert _readback(card.backing, part, tmp_path / "card") == original, part.label
    # Outside the partitions: the table (the EBR chain) and the data put in the gaps arrive,
    # and so does all of the area before the first partition; the gaps' zeros are not written.
    assert sfdisk_dump(card.backing) == sfdisk_dump(image.path)
    for offset in data_blocks:
        assert card.read(offset, BLOCK) == _image_bytes(image, offset, BLOCK) != bytes(BLOCK)
    head = image.partitions[0].start_bytes
    assert card.read(0, head) == _image_bytes(image, 0, head)
    # Between the two pieces of data: 2 MiB less two blocks of zeros, too far apart to be
    # filled in (flasher.image.sparse.DEFAULT_COALESCE_GAP_BYTES), so still random.
    between = range(data_blocks[0] + BLOCK, data_blocks[1], BLOCK)
    assert len(between) == 510
    assert all(_image_bytes(image, off, BLOCK) == bytes(BLOCK) for off in between)
    assert all(card.read(off, BLOCK) != bytes(BLOCK) for off in between)


def _extended(image: BuiltImage) -> BuiltPartition:
    return next(p for p in image.partitions if p.fs == "extended")


def _image_bytes(image: BuiltImage, offset: int, length: int) -> bytes:
    with open(image.path, "rb") as f:
        f.seek(offset)
        return f.read(length)


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


def test_the_log_an_image_was_built_with_does_not_reach_the_card(
    image: BuiltImage, loops: LoopDevices, tmp_path: Path
) -> None:
    """Log blocks left in an image's clean journals (the session that built it) are neither
    written nor left standing: the card holds no block jbd2 could take for its log, and every
    filesystem checks clean."""
    built = copy_image(image, tmp_path)
    dead = []
    for offset, length in _scrub_ranges(image.path):
        for block in (offset, offset + length // 3 // BLOCK * BLOCK):
            patch_bytes(built.path, block, DESCRIPTOR + random.Random(block).randbytes(64))
            dead.append(block)
    assert _scrub_ranges(built.path) == _scrub_ranges(image.path)
    card = _random_card(loops, built)
    for block in dead:  # as if the card held that log too, so the scrub must find it
        card.poke(block, _image_bytes(built, block, BLOCK))
    result, _ = _flash(built.path, card, tmp_path / "cache")
    assert result.zeroed_blocks == len(dead)
    for part in _ext4_parts(built):
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
