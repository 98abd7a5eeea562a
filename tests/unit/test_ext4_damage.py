"""Damaged and unsupported ext2/3/4 filesystems, made by mkfs.ext4 and patched, are refused
with the problem named."""

from __future__ import annotations

from pathlib import Path

import pytest

from flasher.errors import ImageError
from flasher.image.byteio import FileReader, MemoryIO, SliceIO
from flasher.image.ext4 import INCOMPAT_RECOVER, Ext4Filesystem
from tests.support.ext4tools import SB, build, patch, read_bytes, read_u32
from tests.support.filesystems import MiB


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


def corrupt_inode_bitmap(path: Path) -> None:
    inode_bitmap = read_u32(path, 2048 + 4)
    patch(path, inode_bitmap * 1024, bytes([read_bytes(path, inode_bitmap * 1024, 1)[0] ^ 0x80]))


def point_inode_table_outside(path: Path) -> None:
    patch(path, 2048 + 8, (10**9).to_bytes(4, "little"))


CORRUPTIONS = {
    "no magic": ((), corrupt_magic, "not_ext4"),
    "unknown incompatible feature": (("-O", "^metadata_csum"), set_unknown_incompat, "unsupported"),
    "journal needs recovery": (("-O", "^metadata_csum"), set_needs_recovery, "needs_recovery"),
    "marked with errors": (("-O", "^metadata_csum"), set_error_state, "corrupt_filesystem"),
    "superblock checksum": ((), corrupt_label, "corrupt_filesystem"),
    "descriptor checksum (crc32c)": ((), corrupt_descriptor, "corrupt_filesystem"),
    "descriptor checksum (crc16)": (
        ("-O", "^metadata_csum,uninit_bg"),
        corrupt_descriptor,
        "corrupt_filesystem",
    ),
    "bitmap checksum": ((), corrupt_bitmap, "corrupt_filesystem"),
    "inode bitmap checksum": ((), corrupt_inode_bitmap, "corrupt_filesystem"),
    "bitmap disagrees with free count": (
        ("-O", "^metadata_csum,^uninit_bg"),
        corrupt_bitmap,
        "corrupt_filesystem",
    ),
    "inode table outside": (
        ("-O", "^metadata_csum,^uninit_bg"),
        point_inode_table_outside,
        "corrupt_filesystem",
    ),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_unreadable_filesystem_is_refused(case: str, tmp_path: Path) -> None:
    options, damage, problem = CORRUPTIONS[case]
    path = build(tmp_path, ("-b", "1024", *options), 16 * MiB)
    damage(path)
    with FileReader(path) as io, pytest.raises(ImageError) as info:
        Ext4Filesystem(io).allocated_ranges()
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
