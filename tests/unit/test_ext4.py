"""The ext2/3/4 reader against filesystems made by mkfs.ext4, cross-checked with dumpe2fs: used
blocks, geometry, inode-table tails and what a group that cannot be trusted keeps mapped."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from flasher.image import ranges as rng
from flasher.image.byteio import FileReader, MemoryIO
from flasher.image.ext4 import (
    BG_BLOCK_UNINIT,
    BG_INODE_UNINIT,
    BG_INODE_ZEROED,
    RO_COMPAT_GDT_CSUM,
    Ext4Filesystem,
    crc16,
    crc32c,
)
from tests.support.ext4tools import SB, build, patch, read_bytes, read_u32
from tests.support.filesystems import MiB, make_tree, require, run

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
    "meta-bg-32bit-no-flex": (
        96 * MiB,
        ("-b", "1024", "-g", "2048", "-O", "meta_bg,^resize_inode,^64bit,^flex_bg"),
    ),
    "no-sparse-super": (64 * MiB, ("-O", "^sparse_super,^resize_inode")),
    "sparse-super2": (600 * MiB, ("-b", "4096", "-O", "sparse_super2")),
    "mmp": (64 * MiB, ("-O", "mmp")),
    "inline-data": (64 * MiB, ("-O", "inline_data")),
    # Inode tables left for the kernel to zero: no group is flagged ITABLE_ZEROED.
    "lazy-itable-init": (64 * MiB, ("-E", "root_owner=0:0,lazy_itable_init=1,nodiscard")),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "t", seed=7, total_bytes=6 * MiB)


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


def open_fs(path: Path) -> Ext4Filesystem:
    """The filesystem of a copy of `path` held in memory, so it stays readable after return."""
    data = path.read_bytes()
    image = MemoryIO(len(data))
    image.pwrite(data, 0)
    return Ext4Filesystem(image)


def descriptor_offset(fs: Ext4Filesystem, group: int) -> int:
    """Where `group`'s descriptor lies in the primary table (no meta_bg)."""
    return (fs.first_data_block + 1) * fs.block_size + group * fs.desc_size


def rewrite_descriptor(
    path: Path, fs: Ext4Filesystem, group: int, change: Callable[[bytearray], None]
) -> None:
    """Apply `change` to a group descriptor and store it with a valid checksum."""
    offset = descriptor_offset(fs, group)
    raw = bytearray(read_bytes(path, offset, fs.desc_size))
    change(raw)
    number = struct.pack("<I", group)
    struct.pack_into("<H", raw, 0x1E, 0)
    if fs.metadata_csum:
        checksum = crc32c(crc32c(fs.csum_seed, number), bytes(raw)) & 0xFFFF
    else:
        checksum = crc16(crc16(crc16(0xFFFF, fs.uuid), number + raw[:0x1E]), raw[0x20:])
    struct.pack_into("<H", raw, 0x1E, checksum)
    patch(path, offset, bytes(raw))


def set_flags(flags: int, *, clear: int = 0) -> Callable[[bytearray], None]:
    def change(raw: bytearray) -> None:
        value = struct.unpack_from("<H", raw, 0x12)[0]
        struct.pack_into("<H", raw, 0x12, (value | flags) & ~clear)

    return change


def dumpe2fs_inode_table_tails(text: str) -> list[tuple[int, int]]:
    """The inode-table blocks dumpe2fs shows as skippable: with descriptor checksums, in groups
    flagged ITABLE_ZEROED, the blocks past the last used inode (none used under INODE_UNINIT)."""
    features = re.search(r"^Filesystem features:(.*)$", text, re.M)
    assert features is not None
    if not {"metadata_csum", "uninit_bg"} & set(features.group(1).split()):
        return []
    block_size = header_number(text, "Block size")
    inode_size = header_number(text, "Inode size")
    per_group = header_number(text, "Inodes per group")
    tails = []
    for section in re.split(r"^(?=Group \d+:)", text, flags=re.M)[1:]:
        flags = re.match(r"Group \d+: [^\[\n]*(?:\[(.*)\])?", section)
        table = re.search(r"Inode table at (\d+)-(\d+)", section)
        unused = re.search(r"(\d+) unused inodes", section)
        assert flags is not None and table is not None and unused is not None
        names = (flags.group(1) or "").split(", ")
        if "ITABLE_ZEROED" not in names:
            continue
        used = 0 if "INODE_UNINIT" in names else per_group - int(unused.group(1))
        first, last = int(table.group(1)), int(table.group(2))
        used_blocks = -(-used * inode_size // block_size)
        tails.append((first + used_blocks, last + 1 - first - used_blocks))
    return rng.merge(tails)


@pytest.mark.parametrize("variant", VARIANTS)
def test_used_blocks_equal_what_dumpe2fs_reports(variant: str, tree: Path, tmp_path: Path) -> None:
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
        header_number(text, name) for name in names
    )
    assert fs.group_count == len(re.findall(r"^Group \d+:", text, re.M))


def test_empty_large_filesystem_maps_a_few_percent(tmp_path: Path) -> None:
    path = build(tmp_path, ("-b", "4096"), 4096 * MiB)
    with FileReader(path) as io:
        mapped = rng.total(Ext4Filesystem(io).allocated_ranges())
    assert mapped < 0.04 * 4096 * MiB


@pytest.mark.parametrize(
    "variant",
    [
        "defaults-1k",
        "4k",
        "4k-32bit",
        "gdt-csum",
        "meta-bg",
        "many-small-groups",
        "no-checksums",
        "ext2",
        "lazy-itable-init",
    ],
)
def test_inode_table_tails_match_what_dumpe2fs_reports(
    variant: str, tree: Path, tmp_path: Path
) -> None:
    size, options = VARIANTS[variant]
    path = build(tmp_path, options, size, tree)
    with FileReader(path) as io:
        tails = Ext4Filesystem(io).inode_table_tails()
    assert tails == dumpe2fs_inode_table_tails(dumpe2fs(path))


@pytest.mark.parametrize(
    "options", [("-b", "4096"), ("-b", "1024", "-O", "^metadata_csum,uninit_bg")]
)
def test_mapped_blocks_are_the_used_blocks_without_inode_table_tails(
    options: tuple[str, ...], tree: Path, tmp_path: Path
) -> None:
    path = build(tmp_path, options, 96 * MiB, tree)
    fs = open_fs(path)
    tails, mapped, used = fs.inode_table_tails(), fs.mapped_blocks(), fs.used_blocks()
    assert tails
    assert rng.merge([*mapped, *tails]) == used
    assert rng.total(mapped) + rng.total(tails) == rng.total(used)


@pytest.mark.parametrize("variant", ["no-checksums", "ext2", "2k-ext3", "lazy-itable-init"])
def test_inode_tables_are_mapped_whole_without_checksums_or_zeroed_flag(
    variant: str, tree: Path, tmp_path: Path
) -> None:
    size, options = VARIANTS[variant]
    path = build(tmp_path, options, size, tree)
    fs = open_fs(path)
    mapped = fs.mapped_blocks()
    assert fs.inode_table_tails() == []
    assert not any(d.flags & BG_INODE_ZEROED for d in fs.descriptors)
    assert mapped == fs.used_blocks()
    tables = [(d.inode_table, fs.inode_table_blocks) for d in fs.descriptors]
    assert rng.merge([*mapped, *tables]) == mapped


def test_zeroed_flag_is_ignored_once_descriptor_checksums_are_off(tmp_path: Path) -> None:
    # One group (8 MiB of 1 KiB blocks), flagged ITABLE_ZEROED under uninit_bg; then the
    # feature is cleared, as the kernel and e2fsck would then ignore the flags and itable_unused.
    path = build(tmp_path, ("-b", "1024", "-O", "^metadata_csum,uninit_bg"), 8 * MiB)
    before = open_fs(path)
    assert before.group_count == 1 and before.inode_table_tails()
    patch(path, SB + 0x64, (read_u32(path, SB + 0x64) & ~RO_COMPAT_GDT_CSUM).to_bytes(4, "little"))
    after = open_fs(path)
    assert not after.group_csum
    assert after.inode_table_tails() == []
    assert after.mapped_blocks() == after.used_blocks()


def without(ranges: list[tuple[int, int]], hole: tuple[int, int]) -> list[tuple[int, int]]:
    return [
        piece
        for offset, length in rng.complement([hole], 0, 1 << 63)
        for piece in rng.clip(ranges, offset, offset + length)
    ]


def group_tail(fs: Ext4Filesystem, group: int) -> tuple[int, int]:
    start = fs.descriptors[group].inode_table + fs.inode_table_blocks_in_use()[group]
    return start, fs.descriptors[group].inode_table + fs.inode_table_blocks - start


def clear_zeroed(raw: bytearray) -> None:
    set_flags(0, clear=BG_INODE_ZEROED)(raw)


def lower_free_inodes_below_itable_unused(raw: bytearray) -> None:
    free, unused = struct.unpack_from("<H", raw, 0x0E)[0], struct.unpack_from("<H", raw, 0x1C)[0]
    struct.pack_into("<H", raw, 0x0E, unused - 1)
    assert free >= unused > 0


def set_high_half_of_itable_unused(raw: bytearray) -> None:
    assert len(raw) >= 64
    struct.pack_into("<H", raw, 0x32, 1)


UNSAFE_GROUPS = {
    "not flagged ITABLE_ZEROED": clear_zeroed,
    "itable_unused above the free inode count": lower_free_inodes_below_itable_unused,
    "itable_unused above inodes per group (high half)": set_high_half_of_itable_unused,
}
CHECKSUM_KINDS = {
    "metadata_csum": ("-b", "1024"),
    "gdt_csum": ("-b", "1024", "-O", "^metadata_csum,uninit_bg"),
}


@pytest.mark.parametrize("kind", CHECKSUM_KINDS)
@pytest.mark.parametrize("case", UNSAFE_GROUPS)
def test_group_that_cannot_be_trusted_keeps_its_whole_inode_table(
    case: str, kind: str, tree: Path, tmp_path: Path
) -> None:
    path = build(tmp_path, CHECKSUM_KINDS[kind], 64 * MiB, tree)
    before = open_fs(path)
    tail = group_tail(before, 0)
    assert tail[1] > 0
    rewrite_descriptor(path, before, 0, UNSAFE_GROUPS[case])
    after = open_fs(path)
    assert after.inode_table_blocks_in_use()[0] == after.inode_table_blocks
    assert rng.merge([*after.mapped_blocks(), tail]) == after.mapped_blocks()
    assert after.inode_table_tails() == without(before.inode_table_tails(), tail)


@pytest.mark.parametrize("kind", CHECKSUM_KINDS)
def test_inode_marked_in_use_past_itable_unused_keeps_the_whole_table(
    kind: str, tree: Path, tmp_path: Path
) -> None:
    path = build(tmp_path, CHECKSUM_KINDS[kind], 64 * MiB, tree)
    fs = open_fs(path)
    desc = fs.descriptors[0]
    first_unused = fs.inodes_per_group - desc.itable_unused
    bitmap = bytearray(read_bytes(path, desc.inode_bitmap * fs.block_size, fs.block_size))
    bitmap[fs.inodes_per_group // 8 - 1] |= 0x80  # the group's last inode
    assert first_unused < fs.inodes_per_group
    patch(path, desc.inode_bitmap * fs.block_size, bytes(bitmap))
    checksum = crc32c(fs.csum_seed, bytes(bitmap[: fs.inodes_per_group // 8]))

    def store_bitmap_checksum(raw: bytearray) -> None:
        if fs.metadata_csum:
            struct.pack_into("<H", raw, 0x1A, checksum & 0xFFFF)
            struct.pack_into("<H", raw, 0x3A, checksum >> 16)

    rewrite_descriptor(path, fs, 0, store_bitmap_checksum)
    assert open_fs(path).inode_table_blocks_in_use()[0] == fs.inode_table_blocks


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


def test_uninitialised_groups_inode_bitmaps_are_not_read(tmp_path: Path) -> None:
    path = build(tmp_path, (), 64 * MiB)
    fs = open_fs(path)
    before = fs.inode_table_tails()
    uninit = [d for d in fs.descriptors if d.flags & BG_INODE_UNINIT]
    assert uninit
    for desc in uninit:  # all-ones would mean "every inode in use" if it were believed
        patch(path, desc.inode_bitmap * fs.block_size, b"\xff" * fs.block_size)
    assert open_fs(path).inode_table_tails() == before


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


def _journal(fs: Ext4Filesystem, path: Path) -> list[rng.Range]:
    require("debugfs")
    extents = run(["debugfs", "-R", "blocks <8>", path]).stdout.split()
    return rng.merge((int(b), 1) for b in extents)


def _uninit_bitmaps(fs: Ext4Filesystem, path: Path) -> list[rng.Range]:
    return rng.merge(
        (block, 1)
        for d in fs.descriptors
        if d.flags & BG_BLOCK_UNINIT
        for block in (d.block_bitmap, d.inode_bitmap)
    )


def _backup_reserved_gdt(fs: Ext4Filesystem, path: Path) -> list[rng.Range]:
    return [
        (fs.group_first_block(g) + 1 + fs.desc_blocks, fs.reserved_gdt_blocks)
        for g in range(1, fs.group_count)
        if fs.has_superblock_backup(g)
    ]


@pytest.mark.parametrize(
    "kind",
    [
        # an unwritten body could replay a stale transaction of the same image after a crash
        _journal,
        # never read, but next to metadata that is written
        _uninit_bitmaps,
        _backup_reserved_gdt,
    ],
    ids=["journal", "uninitialised-groups-bitmaps", "backup-reserved-gdt"],
)
def test_zero_metadata_kept_by_rule_is_in_the_copy(
    tmp_path: Path, kind: Callable[[Ext4Filesystem, Path], list[rng.Range]]
) -> None:
    path = build(tmp_path, ("-b", "1024"), 64 * MiB)  # 8 groups, most of them uninitialised
    with FileReader(path) as io:
        fs = Ext4Filesystem(io)
        kept = kind(fs, path)
        mapped = fs.mapped_blocks()
    assert rng.total(kept) > 0
    assert rng.merge([*mapped, *kept]) == mapped


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
