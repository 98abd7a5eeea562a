"""The ext2/3/4 reader against filesystems made by mkfs.ext4, cross-checked with dumpe2fs."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from flasher.errors import ImageError
from flasher.image import ranges as rng
from flasher.image.ext4 import (
    BG_BLOCK_UNINIT,
    INCOMPAT_RECOVER,
    Ext4Filesystem,
    crc16,
    crc32c,
)
from flasher.image.io import FileReader, MemoryIO, SliceIO
from tests.support.filesystems import MiB, make_tree, mkfs_ext4, require, run

SB = 1024  # superblock offset

VARIANTS = {
    "defaults-1k": (64 * MiB, ()),
    "4k": (600 * MiB, ("-b", "4096")),
    "4k-no-flex-bg": (600 * MiB, ("-b", "4096", "-O", "^flex_bg")),
    "4k-32bit": (600 * MiB, ("-b", "4096", "-O", "^64bit")),
    "1k-no-flex-bg-64bit": (64 * MiB, ("-b", "1024", "-O", "^flex_bg,64bit")),
    "no-checksums": (64 * MiB, ("-O", "^metadata_csum,^uninit_bg")),
    "gdt-csum": (64 * MiB, ("-O", "^metadata_csum,uninit_bg")),
    "2k-ext3": (64 * MiB, ("-t", "ext3", "-b", "2048")),
    "ext2": (64 * MiB, ("-t", "ext2")),
    "many-small-groups": (64 * MiB, ("-b", "1024", "-g", "1024", "-N", "4000")),
    "meta-bg": (96 * MiB, ("-b", "1024", "-g", "1024", "-O", "meta_bg,^resize_inode")),
    "meta-bg-32bit-no-flex": (96 * MiB, ("-b", "1024", "-g", "2048", "-O",
                                         "meta_bg,^resize_inode,^64bit,^flex_bg")),
    "no-sparse-super": (64 * MiB, ("-O", "^sparse_super,^resize_inode")),
    "sparse-super2": (600 * MiB, ("-b", "4096", "-O", "sparse_super2")),
    "mmp": (64 * MiB, ("-O", "mmp")),
    "inline-data": (64 * MiB, ("-O", "inline_data")),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "t", seed=7, total_bytes=6 * MiB)


def build(tmp_path: Path, options: tuple[str, ...], size: int = 64 * MiB,
          tree: Path | None = None) -> Path:
    path = tmp_path / "fs.img"
    mkfs_ext4(path, size, options, tree)
    return path


def dumpe2fs(path: Path) -> str:
    require("dumpe2fs")
    return run(["dumpe2fs", path]).stdout.decode()


def dumpe2fs_used_blocks(text: str) -> list[tuple[int, int]]:
    free = []
    for line in re.findall(r"^\s+Free blocks: (.*)$", text, re.M):
        for item in filter(None, (x.strip() for x in line.split(","))):
            first, _, last = item.partition("-")
            free.append((int(first), int(last or first) - int(first) + 1))
    return rng.complement(free, 0, header_number(text, "Block count"))


def header_number(text: str, name: str) -> int:
    match = re.search(rf"^{name}:\s+(\d+)", text, re.M)
    assert match is not None, f"dumpe2fs printed no {name}"
    return int(match.group(1))


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read_u32(path: Path, offset: int) -> int:
    with open(path, "rb") as f:
        f.seek(offset)
        return int.from_bytes(f.read(4), "little")


@pytest.mark.parametrize("variant", VARIANTS)
def test_used_blocks_equal_what_dumpe2fs_reports(variant: str, tree: Path,
                                                 tmp_path: Path) -> None:
    size, options = VARIANTS[variant]
    path = build(tmp_path, options, size, tree)
    with FileReader(path) as io:
        used = Ext4Filesystem(io).used_blocks()
    assert used == dumpe2fs_used_blocks(dumpe2fs(path))


@pytest.mark.parametrize("variant", ["defaults-1k", "4k", "meta-bg"])
def test_geometry_matches_dumpe2fs(variant: str, tmp_path: Path) -> None:
    size, options = VARIANTS[variant]
    path = build(tmp_path, options, size)
    text = dumpe2fs(path)
    with FileReader(path) as io:
        fs = Ext4Filesystem(io)
    names = ("Block size", "Block count", "Blocks per group", "Inodes per group")
    assert (fs.block_size, fs.blocks_count, fs.blocks_per_group, fs.inodes_per_group) == tuple(
        header_number(text, name) for name in names)
    assert fs.group_count == len(re.findall(r"^Group \d+:", text, re.M))


def test_empty_large_filesystem_maps_a_few_percent(tmp_path: Path) -> None:
    path = build(tmp_path, ("-b", "4096"), 4096 * MiB)
    with FileReader(path) as io:
        mapped = rng.total(Ext4Filesystem(io).allocated_ranges())
    assert mapped < 0.04 * 4096 * MiB


def test_uninitialised_groups_bitmaps_are_not_read(tmp_path: Path) -> None:
    path = build(tmp_path, ("-b", "4096"), 1024 * MiB)
    with FileReader(path) as io:
        fs = Ext4Filesystem(io)
        before = fs.used_blocks()
        uninit = [d for d in fs.descriptors if d.flags & BG_BLOCK_UNINIT]
    assert uninit
    for desc in uninit:  # all-ones would mean "every block used" if it were believed
        patch(path, desc.block_bitmap * fs.block_size, b"\xff" * fs.block_size)
    with FileReader(path) as io:
        assert Ext4Filesystem(io).used_blocks() == before


def test_other_groups_tables_inside_an_uninitialised_group_are_mapped(tmp_path: Path) -> None:
    # With flex_bg every group's bitmaps and inode table live in group 0. Flag group 0 as
    # BLOCK_UNINIT (checksum fixed up): its bitmap is no longer read, yet all those tables
    # must still be mapped.
    path = build(tmp_path, ("-b", "1024", "-O", "^metadata_csum,uninit_bg"), 64 * MiB)
    with FileReader(path) as io:
        fs = Ext4Filesystem(io)
    desc_offset = 2 * fs.block_size
    with open(path, "r+b") as f:
        f.seek(desc_offset)
        raw = bytearray(f.read(fs.desc_size))
    flags = struct.unpack_from("<H", raw, 0x12)[0] | BG_BLOCK_UNINIT
    struct.pack_into("<H", raw, 0x12, flags)
    checksum = crc16(crc16(crc16(0xFFFF, fs.uuid), struct.pack("<I", 0) + raw[:0x1E]), raw[0x20:])
    struct.pack_into("<H", raw, 0x1E, checksum)
    patch(path, desc_offset, bytes(raw))
    with FileReader(path) as io:
        fs = Ext4Filesystem(io)
        used = fs.used_blocks()
    assert fs.descriptors[0].flags & BG_BLOCK_UNINIT
    tables = [(d.inode_table, fs.inode_table_blocks) for d in fs.descriptors]
    tables += [(d.block_bitmap, 1) for d in fs.descriptors]
    assert {d.inode_table // fs.blocks_per_group for d in fs.descriptors} == {0}
    assert rng.merge([*used, *tables]) == used


def test_bytes_after_the_filesystem_are_mapped(tmp_path: Path) -> None:
    path = build(tmp_path, (), 32 * MiB)
    with open(path, "r+b") as f:
        f.truncate(40 * MiB)
    with FileReader(path) as io:
        ranges = Ext4Filesystem(io).allocated_ranges()
    assert ranges[-1][0] + ranges[-1][1] == 40 * MiB
    assert rng.clip(ranges, 32 * MiB, 40 * MiB) == [(32 * MiB, 8 * MiB)]


def test_journal_blocks_are_mapped(tmp_path: Path) -> None:
    path = build(tmp_path, (), 64 * MiB)
    require("debugfs")
    extents = run(["debugfs", "-R", "blocks <8>", path]).stdout.split()
    journal = rng.merge((int(b), 1) for b in extents)
    with FileReader(path) as io:
        used = Ext4Filesystem(io).used_blocks()
    assert journal and rng.merge([*used, *journal]) == used


def corrupt_magic(path: Path) -> None:
    patch(path, SB + 0x38, b"\0\0")


def set_unknown_incompat(path: Path) -> None:
    patch(path, SB + 0x60, (read_u32(path, SB + 0x60) | 0x80000000).to_bytes(4, "little"))


def set_needs_recovery(path: Path) -> None:
    patch(path, SB + 0x60, (read_u32(path, SB + 0x60) | INCOMPAT_RECOVER).to_bytes(4, "little"))


def set_error_state(path: Path) -> None:
    patch(path, SB + 0x3A, (3).to_bytes(2, "little"))


def corrupt_label(path: Path) -> None:
    patch(path, SB + 0x78, b"tampered")


def corrupt_descriptor(path: Path) -> None:
    patch(path, 2048 + 0x0E, b"\x01\x00")  # group 0's free inode count (1 KiB blocks)


def corrupt_bitmap(path: Path) -> None:
    block_bitmap = read_u32(path, 2048)
    with open(path, "r+b") as f:
        f.seek(block_bitmap * 1024 + 600)
        byte = f.read(1)[0]
        f.seek(block_bitmap * 1024 + 600)
        f.write(bytes([byte ^ 0x10]))


def point_inode_table_outside(path: Path) -> None:
    patch(path, 2048 + 8, (10**9).to_bytes(4, "little"))


CORRUPTIONS = {
    "no magic": ((), corrupt_magic, "not_ext4"),
    "unknown incompatible feature": (("-O", "^metadata_csum"), set_unknown_incompat,
                                     "unsupported"),
    "journal needs recovery": (("-O", "^metadata_csum"), set_needs_recovery, "needs_recovery"),
    "marked with errors": (("-O", "^metadata_csum"), set_error_state, "corrupt_filesystem"),
    "superblock checksum": ((), corrupt_label, "corrupt_filesystem"),
    "descriptor checksum (crc32c)": ((), corrupt_descriptor, "corrupt_filesystem"),
    "descriptor checksum (crc16)": (("-O", "^metadata_csum,uninit_bg"), corrupt_descriptor,
                                    "corrupt_filesystem"),
    "bitmap checksum": ((), corrupt_bitmap, "corrupt_filesystem"),
    "bitmap disagrees with free count": (("-O", "^metadata_csum,^uninit_bg"), corrupt_bitmap,
                                         "corrupt_filesystem"),
    "inode table outside": (("-O", "^metadata_csum,^uninit_bg"), point_inode_table_outside,
                            "corrupt_filesystem"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_unreadable_filesystem_is_refused(case: str, tmp_path: Path) -> None:
    options, damage, problem = CORRUPTIONS[case]
    path = build(tmp_path, ("-b", "1024", *options), 16 * MiB)
    damage(path)
    with FileReader(path) as io, pytest.raises(ImageError) as info:
        Ext4Filesystem(io).used_blocks()
    assert info.value.problem == problem


@pytest.mark.parametrize("options", [("-O", "bigalloc"), ("-O", "journal_dev")])
def test_unsupported_layouts_are_refused(options: tuple[str, ...], tmp_path: Path) -> None:
    path = build(tmp_path, ("-b", "4096", *options), 64 * MiB)
    with FileReader(path) as io, pytest.raises(ImageError) as info:
        Ext4Filesystem(io)
    assert info.value.problem == "unsupported"


def test_filesystem_larger_than_its_partition_is_refused(tmp_path: Path) -> None:
    path = build(tmp_path, (), 16 * MiB)
    with FileReader(path) as io, pytest.raises(ImageError) as info:
        Ext4Filesystem(SliceIO(io, 0, 15 * MiB))
    assert info.value.problem == "truncated"


def test_zeros_are_not_ext4() -> None:
    with pytest.raises(ImageError) as info:
        Ext4Filesystem(MemoryIO(4096))
    assert info.value.problem == "not_ext4"


@pytest.mark.parametrize(
    ("function", "start", "finish", "expected"),
    [
        (crc32c, 0xFFFFFFFF, 0xFFFFFFFF, 0xE3069283),  # CRC-32C check value
        (crc16, 0, 0, 0xBB3D),  # CRC-16/ARC check value
    ],
)
def test_checksums_match_published_check_values(
    function: Callable[[int, bytes], int], start: int, finish: int, expected: int
) -> None:
    assert function(start, b"123456789") ^ finish == expected
