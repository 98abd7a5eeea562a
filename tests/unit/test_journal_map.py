"""The allocation map and ext3/4 journals: a clean journal's body is scrubbed, neither mapped nor
read; its superblock stays mapped; a journal that needs replay or cannot be read with confidence
stays mapped whole. The journal's blocks are taken from debugfs, not from the reader under test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flasher.image import ranges as rng
from flasher.image.bmap import write_bmap
from flasher.image.byteio import FileReader
from flasher.image.ext4 import Ext4Filesystem
from flasher.image.partitions import read_partition_table
from flasher.image.sparse import AllocationMap, allocation_map
from tests.support.ext4tools import build, patch
from tests.support.filesystems import MiB, nonzero_blocks, require, run
from tests.support.recording import Recording

BLOCK = 4096


def exact_map(path: Path, bmap_path: Path | None = None) -> AllocationMap:
    with FileReader(path) as io:
        table = read_partition_table(io, name=str(path))
        return allocation_map(io, table, bmap_path=bmap_path, coalesce_gap_bytes=0, block_bytes=1)


def journal_blocks(path: Path) -> list[int]:
    """The journal inode's data blocks in logical order, from debugfs's extent listing (the
    extent tree's own blocks, "(ETB…)", left out)."""
    require("debugfs")
    out = run(["debugfs", "-R", "stat <8>", path]).stdout.decode()
    extents = out.split("EXTENTS:", 1)[1]
    blocks: dict[int, int] = {}
    for first, last, start in re.findall(r"\((\d+)(?:-(\d+))?\):(\d+)", extents):
        for i in range(int(last or first) - int(first) + 1):
            blocks[int(first) + i] = int(start) + i
    assert sorted(blocks) == list(range(len(blocks)))
    return [blocks[i] for i in range(len(blocks))]


def byte_ranges(blocks: list[int], block_bytes: int) -> list[tuple[int, int]]:
    return rng.merge((b * block_bytes, block_bytes) for b in blocks)


def inode8_offset(path: Path, block_bytes: int) -> int:
    out = run(["debugfs", "-R", "imap <8>", path]).stdout.decode()
    match = re.search(r"located at block (\d+), offset (0x[0-9a-f]+)", out)
    assert match, out
    return int(match.group(1)) * block_bytes + int(match.group(2), 16)


@pytest.fixture
def fs4k(tmp_path: Path) -> Path:
    return build(tmp_path, ("-b", "4096"), size=64 * MiB)


def test_zero_journal_body_is_scrubbed_and_left_out_of_the_ranges(fs4k: Path) -> None:
    blocks = journal_blocks(fs4k)
    amap = exact_map(fs4k)
    assert list(amap.scrub) == byte_ranges(blocks[1:], BLOCK)
    assert rng.subtract(amap.ranges, amap.scrub) == list(amap.ranges)


def test_journal_superblock_stays_mapped(fs4k: Path) -> None:
    first = journal_blocks(fs4k)[0]
    amap = exact_map(fs4k)
    assert amap.contains(first * BLOCK) and amap.contains(first * BLOCK + BLOCK - 1)


def test_mapped_bytes_drop_by_the_journal_body(fs4k: Path) -> None:
    blocks = journal_blocks(fs4k)
    with FileReader(fs4k) as io:
        before = rng.total(Ext4Filesystem(io).allocated_ranges())
    amap = exact_map(fs4k)
    assert before - amap.mapped_bytes == (len(blocks) - 1) * BLOCK == amap.scrub_bytes
    assert amap.to_dict()["scrub_bytes"] == amap.scrub_bytes


def test_a_clean_journals_body_is_scrubbed_whatever_it_holds_and_never_read(fs4k: Path) -> None:
    """jbd2 reads a clean journal's body only after writing it again: what the image holds there
    (here, a log block of the session that built it) means nothing, so it is neither mapped nor
    even read."""
    blocks = journal_blocks(fs4k)
    dead = blocks[100] * BLOCK
    patch(fs4k, dead, bytes.fromhex("c03b3998") + (1).to_bytes(4, "big") + b"old log")
    body = byte_ranges(blocks[1:], BLOCK)
    with FileReader(fs4k) as io:
        reads = Recording(io)
        table = read_partition_table(reads, name=str(fs4k))
        amap = allocation_map(reads, table, coalesce_gap_bytes=0, block_bytes=1)
    assert not amap.contains(dead)
    assert list(amap.scrub) == body
    assert rng.subtract(body, rng.merge(reads.reads)) == body


def test_journal_of_1k_blocks_is_scrubbed_in_whole_4k_blocks(tmp_path: Path) -> None:
    path = build(tmp_path, ("-b", "1024"), size=32 * MiB)
    blocks = journal_blocks(path)
    amap = exact_map(path)
    body = byte_ranges(blocks[1:], 1024)
    assert list(amap.scrub) == rng.align_in(body, BLOCK)
    # The body's 1 KiB blocks outside whole 4 KiB blocks stay mapped.
    assert rng.subtract(body, amap.scrub) == rng.clip(amap.ranges, body[0][0], sum(body[-1]))


@pytest.mark.parametrize(
    "damage",
    ["extent-magic", "inode-only", "jbd2-magic", "journal-needs-replay", "block-mapped"],
)
def test_a_journal_that_cannot_be_vouched_for_stays_mapped(fs4k: Path, damage: str) -> None:
    inode = inode8_offset(fs4k, BLOCK)
    jsb = journal_blocks(fs4k)[0] * BLOCK
    if damage == "extent-magic":  # in the inode and in the superblock's backup of its i_block
        script = "sif <8> block[0] 0\nssv jnl_blocks[0] 0\n"
        run(["debugfs", "-w", "-f", "-", fs4k], stdin=script.encode())
    elif damage == "inode-only":  # the backup then disagrees
        patch(fs4k, inode + 0x28 + 12 + 4, b"\x05\x00")
    elif damage == "jbd2-magic":
        patch(fs4k, jsb, b"\0\0\0\0")
    elif damage == "journal-needs-replay":
        patch(fs4k, jsb + 0x1C, (1).to_bytes(4, "big"))
    else:  # the extents flag cleared: read as a block map, which this reader does not follow
        flags = bytearray(fs4k.read_bytes()[inode + 0x20 : inode + 0x24])
        flags[2] &= ~0x08
        patch(fs4k, inode + 0x20, bytes(flags))
    with FileReader(fs4k) as io:
        used = Ext4Filesystem(io).allocated_ranges()
    amap = exact_map(fs4k)
    assert amap.scrub == ()
    assert list(amap.ranges) == used


def test_journal_with_an_extent_index_is_scrubbed(tmp_path: Path) -> None:
    # A journal added to a full, fragmented filesystem: one extent per block, under an index.
    require("debugfs", "tune2fs")
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(3000):
        (tree / f"f{i:05d}").write_bytes(i.to_bytes(4, "little") * 1024)
    path = build(tmp_path, ("-b", "4096", "-N", "4000", "-O", "^has_journal"), 16 * MiB, tree)
    script = "".join(f"rm f{i:05d}\n" for i in range(0, 3000, 2))
    run(["debugfs", "-w", "-f", "-", path], stdin=script.encode())
    run(["tune2fs", "-J", "size=4", path])
    extents = run(["debugfs", "-R", "ex <8>", path]).stdout.decode()
    assert re.search(r"^\s*0/\s*1\s", extents, re.M), extents  # depth 1: an index node
    blocks = journal_blocks(path)
    amap = exact_map(path)
    assert list(amap.scrub) == byte_ranges(blocks[1:], BLOCK)


def test_a_bmap_map_scrubs_the_journal_it_leaves_out(fs4k: Path, tmp_path: Path) -> None:
    blocks = journal_blocks(fs4k)
    size = fs4k.stat().st_size
    bmap = write_bmap(tmp_path / "fs.bmap", nonzero_blocks(fs4k, BLOCK), size)
    amap = exact_map(fs4k, bmap_path=bmap)
    assert amap.source == "bmap"
    assert list(amap.scrub) == byte_ranges(blocks[1:], BLOCK)


def test_an_overlay_over_a_scrub_block_maps_that_block(fs4k: Path) -> None:
    amap = exact_map(fs4k)
    start = amap.scrub[0][0] + 8 * BLOCK
    card = amap.including([(start + 10, 5)])
    assert card.contains(start + 10)
    assert rng.subtract(card.scrub, [(start, BLOCK)]) == list(card.scrub)
    assert card.scrub_bytes == amap.scrub_bytes - BLOCK


def test_the_default_map_keeps_scrub_whole_blocks_apart_from_the_ranges(fs4k: Path) -> None:
    with FileReader(fs4k) as io:
        amap = allocation_map(io, read_partition_table(io, name="fs"))
    assert amap.scrub
    assert all(off % BLOCK == 0 and n % BLOCK == 0 for off, n in amap.scrub)
    assert rng.subtract(amap.ranges, amap.scrub) == list(amap.ranges)
