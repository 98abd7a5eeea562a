"""Create an empty FAT12/16/32 filesystem, deterministically (like mkfs.fat with a fixed volume id).

Used by the sandbox's image synthesizer and by tests. Imports only the standard library and
flasher's byteio and fat.entries modules.
"""

from __future__ import annotations

import struct

from flasher.image.byteio import WriteAt
from flasher.image.fat.entries import ATTR_VOLUME_ID, FAT_EPOCH, fat_stamp, short_entry

SECTOR_SIZE = 512
FAT_COUNT = 2
MEDIA_FIXED_DISK = 0xF8
# Cluster counts each FAT type must have, as Linux and fsck.fat tell the types apart.
CLUSTER_RANGE = {12: (1, 4084), 16: (4085, 65524), 32: (65525, 0x0FFFFFF5)}
LABEL_FORBIDDEN = frozenset('"*+,./:;<=>?[\\]|')
BPB = struct.Struct("<3s8sHBHBHHBHHHII")


def format_fat(
    io: WriteAt,
    *,
    label: str,
    fat_bits: int = 16,
    volume_id: int = 0x1234ABCD,
    sectors_per_cluster: int | None = None,
    hidden_sectors: int = 0,
) -> None:
    """Write an empty FAT filesystem filling `io`: boot sector, two FATs, empty root directory.

    The cluster size is the smallest that keeps the cluster count in the type's range unless
    given; the data area starts on a cluster boundary. Only metadata is written, not the data
    area. Raises ValueError when the size, type or label cannot make a valid filesystem.
    """
    if fat_bits not in CLUSTER_RANGE:
        raise ValueError(f"fat_bits must be 12, 16 or 32, not {fat_bits}")
    raw_label = _label_bytes(label)
    total = io.size // SECTOR_SIZE
    choices = [sectors_per_cluster] if sectors_per_cluster else [1 << i for i in range(8)]
    layout = None
    low, high = CLUSTER_RANGE[fat_bits]
    for spc in choices:
        candidate = _layout(total, fat_bits, spc)
        if candidate and low <= candidate[2] <= high:
            layout = (spc, *candidate)
            break
    if layout is None:
        raise ValueError(
            f"{io.size} bytes cannot hold a FAT{fat_bits} filesystem"
            + (f" with {sectors_per_cluster} sectors per cluster" if sectors_per_cluster else "")
        )
    spc, reserved, fat_sectors, clusters = layout
    root_entries = 0 if fat_bits == 32 else 512
    boot = _boot_sector(
        fat_bits,
        spc,
        reserved,
        fat_sectors,
        root_entries,
        total,
        hidden_sectors,
        volume_id,
        raw_label,
    )
    io.pwrite(bytes(reserved * SECTOR_SIZE), 0)
    io.pwrite(boot, 0)
    fat = bytearray(fat_sectors * SECTOR_SIZE)
    mask = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}[fat_bits]
    first = [(mask & ~0xFF) | MEDIA_FIXED_DISK, mask] + ([mask] if fat_bits == 32 else [])
    if fat_bits == 12:
        fat[0:3] = (first[0] | (first[1] << 12)).to_bytes(3, "little")
    else:
        width = fat_bits // 8
        for i, value in enumerate(first):
            fat[i * width : (i + 1) * width] = value.to_bytes(width, "little")
    fat_offset = reserved * SECTOR_SIZE
    for copy in range(FAT_COUNT):
        io.pwrite(bytes(fat), fat_offset + copy * len(fat))
    root_offset = fat_offset + FAT_COUNT * len(fat)
    root = bytearray(root_entries * 32 if fat_bits != 32 else spc * SECTOR_SIZE)
    if raw_label != b"NO NAME    ":
        root[:32] = short_entry(raw_label, ATTR_VOLUME_ID, 0, 0, fat_stamp(FAT_EPOCH))
    io.pwrite(bytes(root), root_offset)
    if fat_bits == 32:
        info = bytearray(SECTOR_SIZE)
        struct.pack_into("<I", info, 0, 0x41615252)
        struct.pack_into("<IIII", info, 484, 0x61417272, clusters - 1, 2, 0)
        struct.pack_into("<I", info, 508, 0xAA550000)
        for base in (0, 6):
            io.pwrite(boot, base * SECTOR_SIZE)
            io.pwrite(bytes(info), (base + 1) * SECTOR_SIZE)


def _label_bytes(label: str) -> bytes:
    if not label:
        return b"NO NAME    "
    if (
        len(label) > 11
        or not label.isascii()
        or any(c in LABEL_FORBIDDEN or ord(c) < 0x20 for c in label)
    ):
        raise ValueError(
            f'FAT label {label!r} must be up to 11 ASCII characters without "*+,./:;<=>?[\\]|'
        )
    return label.ljust(11).encode("ascii")


def _layout(total: int, bits: int, spc: int) -> tuple[int, int, int] | None:
    """(reserved sectors, sectors per FAT, clusters) for `total` sectors, or None if too small."""
    reserved = 32 if bits == 32 else 1
    root_sectors = 0 if bits == 32 else 512 * 32 // SECTOR_SIZE
    estimate = (total - reserved - root_sectors) // spc
    if estimate <= 0:
        return None
    fat_sectors = -(-((estimate + 2) * bits) // (8 * SECTOR_SIZE))
    meta = reserved + FAT_COUNT * fat_sectors + root_sectors
    reserved += -meta % spc
    clusters = (total - meta - (-meta % spc)) // spc
    if clusters <= 0:
        return None
    return reserved, fat_sectors, clusters


def _boot_sector(
    bits: int,
    spc: int,
    reserved: int,
    fat_sectors: int,
    root_entries: int,
    total: int,
    hidden: int,
    volume_id: int,
    label: bytes,
) -> bytes:
    boot = bytearray(SECTOR_SIZE)
    if total > 0xFFFFFFFF:
        raise ValueError("a FAT filesystem cannot have more than 2^32-1 sectors")
    small = total if total < 0x10000 and bits != 32 else 0
    BPB.pack_into(
        boot,
        0,
        b"\xeb\x58\x90" if bits == 32 else b"\xeb\x3c\x90",
        b"MSWIN4.1",
        SECTOR_SIZE,
        spc,
        reserved,
        FAT_COUNT,
        root_entries,
        small,
        MEDIA_FIXED_DISK,
        0 if bits == 32 else fat_sectors,
        63,
        255,
        hidden,
        0 if small else total,
    )
    if bits == 32:
        struct.pack_into("<IHHIHH", boot, 0x24, fat_sectors, 0, 0, 2, 1, 6)
        ext = 0x40
    else:
        ext = 0x24
    struct.pack_into(
        "<BBBI11s8s",
        boot,
        ext,
        0x80,
        0,
        0x29,
        volume_id & 0xFFFFFFFF,
        label,
        f"FAT{bits}".ljust(8).encode("ascii"),
    )
    # The boot code only halts: these volumes are data partitions, never booted from by BIOS.
    code_at = ext + 26
    boot[code_at : code_at + 3] = b"\xf4\xeb\xfd"
    boot[510:512] = b"\x55\xaa"
    return bytes(boot)
