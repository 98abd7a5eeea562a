"""Write partition tables: MBR (primaries, an extended partition and its EBR chain) or GPT.

Used by the sandbox's image synthesizer and by tests; output is deterministic (GPT GUIDs come
from a seed). Only table sectors are written. Imports only the standard library and flasher's
io and partitions modules.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from flasher.image.byteio import WriteAt
from flasher.image.partitions import (
    GPT_ENTRY,
    GPT_HEADER,
    GPT_SIGNATURE,
    MBR_ENTRY,
    MBR_EXTENDED_TYPES,
    MBR_PROTECTIVE_TYPE,
)

MBR_FAT16_LBA = "0x0e"
MBR_FAT32_LBA = "0x0c"
MBR_LINUX = "0x83"
GPT_EFI_SYSTEM = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
GPT_MS_BASIC_DATA = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"
GPT_LINUX_FILESYSTEM = "0fc63daf-8483-4772-8e79-3d69d8477de4"
EXTENDED_LBA = 0x0F
EBR_LINK = 0x05
GPT_REVISION = 0x00010000
GPT_ENTRY_SIZE = 128
GPT_NAME_UNITS = 36
GPT_ATTR_LEGACY_BOOTABLE = 1 << 2
CHS_LIMIT = 1024 * 255 * 63


@dataclass(frozen=True)
class PartitionSpec:
    """A partition to create. `type_id` is an MBR type byte ("0x0c") or a GPT type GUID.

    `logical` (MBR only) puts it inside the extended partition; `name` is GPT only.
    """

    start_bytes: int
    size_bytes: int
    type_id: str
    name: str = ""
    bootable: bool = False
    logical: bool = False

    @property
    def end_bytes(self) -> int:
        return self.start_bytes + self.size_bytes


def deterministic_guid(seed: str, purpose: str) -> uuid.UUID:
    """A version-4-shaped GUID derived from `seed` and `purpose`: same inputs, same GUID."""
    digest = hashlib.sha256(f"{seed}\0{purpose}".encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


def write_mbr(io: WriteAt, specs: Sequence[PartitionSpec], *, disk_signature: int = 0) -> None:
    """Write an MBR; logical specs go into one extended partition, EBRs chained in order.

    The extended partition starts where the last primary before the first logical ends (or
    at sector 1); each later EBR sits in the sector right after the previous logical.
    Raises ValueError for layouts MBR cannot express.
    """
    _check_specs(io, specs, 512, first_usable=1, last_usable=io.size // 512 - 1)
    primaries = [s for s in specs if not s.logical]
    logicals = sorted((s for s in specs if s.logical), key=lambda s: s.start_bytes)
    if len(primaries) + (1 if logicals else 0) > 4:
        raise ValueError("an MBR holds at most 4 primary partitions, the extended one included")
    entries = [
        _mbr_entry(s.start_bytes // 512, s.size_bytes // 512, _mbr_type(s.type_id), s.bootable)
        for s in primaries
    ]
    ebr_sectors: list[tuple[int, bytes]] = []
    if logicals:
        first = logicals[0].start_bytes
        container = max([p.end_bytes for p in primaries if p.end_bytes <= first] + [512]) // 512
        end = logicals[-1].end_bytes // 512
        if any(p.start_bytes // 512 < end and p.end_bytes // 512 > container for p in primaries):
            raise ValueError("a primary partition lies inside the extended partition")
        entries.append(_mbr_entry(container, end - container, EXTENDED_LBA, False))
        ebrs = [container] + [s.end_bytes // 512 for s in logicals[:-1]]
        for i, (spec, ebr) in enumerate(zip(logicals, ebrs, strict=True)):
            start, count = spec.start_bytes // 512, spec.size_bytes // 512
            if start <= ebr:
                raise ValueError(
                    f"logical partition {i + 5} needs a free sector before it "
                    "for its extended boot record"
                )
            links = [
                _mbr_entry(
                    start - ebr, count, _mbr_type(spec.type_id), spec.bootable, chs_start=start
                )
            ]
            if i + 1 < len(logicals):
                nxt = ebrs[i + 1]
                links.append(
                    _mbr_entry(
                        nxt - container,
                        logicals[i + 1].end_bytes // 512 - nxt,
                        EBR_LINK,
                        False,
                        chs_start=nxt,
                    )
                )
            ebr_sectors.append((ebr, _boot_record(links, 0)))
    io.pwrite(_boot_record(entries, disk_signature), 0)
    for ebr, sector in ebr_sectors:
        io.pwrite(sector, ebr * 512)


def write_gpt(
    io: WriteAt,
    specs: Sequence[PartitionSpec],
    *,
    seed: str,
    sector_size: int = 512,
    entry_count: int = 128,
) -> None:
    """Write a protective MBR, primary and backup GPT headers and entry arrays.

    Partition `i` (1-based, in spec order) gets the GUID derived from `seed`; so does the disk.
    """
    ss = sector_size
    total = io.size // ss
    entry_sectors = -(-entry_count * GPT_ENTRY_SIZE // ss)
    first_usable, last_usable = 2 + entry_sectors, total - 2 - entry_sectors
    if len(specs) > entry_count:
        raise ValueError(f"{len(specs)} partitions do not fit {entry_count} GPT entries")
    _check_specs(io, specs, ss, first_usable=first_usable, last_usable=last_usable)
    table = bytearray(entry_count * GPT_ENTRY_SIZE)
    for i, spec in enumerate(specs):
        units = spec.name.encode("utf-16-le")
        if len(units) > 2 * GPT_NAME_UNITS:
            raise ValueError(f"GPT partition name {spec.name!r} is longer than 36 characters")
        GPT_ENTRY.pack_into(
            table,
            i * GPT_ENTRY_SIZE,
            uuid.UUID(spec.type_id).bytes_le,
            deterministic_guid(seed, f"partition {i + 1}").bytes_le,
            spec.start_bytes // ss,
            spec.end_bytes // ss - 1,
            GPT_ATTR_LEGACY_BOOTABLE if spec.bootable else 0,
            units,
        )
    disk_guid = deterministic_guid(seed, "disk").bytes_le
    entries_crc = zlib.crc32(table)
    backup_entries = last_usable + 1

    def header(my_lba: int, other_lba: int, entries_lba: int) -> bytes:
        fields = [
            GPT_SIGNATURE,
            GPT_REVISION,
            GPT_HEADER.size,
            0,
            0,
            my_lba,
            other_lba,
            first_usable,
            last_usable,
            disk_guid,
            entries_lba,
            entry_count,
            GPT_ENTRY_SIZE,
            entries_crc,
        ]
        fields[3] = zlib.crc32(GPT_HEADER.pack(*fields))
        return GPT_HEADER.pack(*fields).ljust(ss, b"\0")

    protective = _mbr_entry(1, min(total - 1, 0xFFFFFFFF), MBR_PROTECTIVE_TYPE, False)
    io.pwrite(_boot_record([protective], 0).ljust(ss, b"\0"), 0)
    io.pwrite(header(1, total - 1, 2), ss)
    io.pwrite(bytes(table), 2 * ss)
    io.pwrite(bytes(table), backup_entries * ss)
    io.pwrite(header(total - 1, 1, backup_entries), (total - 1) * ss)


def _check_specs(
    io: WriteAt, specs: Sequence[PartitionSpec], ss: int, *, first_usable: int, last_usable: int
) -> None:
    for n, spec in enumerate(specs, start=1):
        if spec.start_bytes % ss or spec.size_bytes % ss or spec.size_bytes <= 0:
            raise ValueError(
                f"partition spec {n}: start and size must be positive multiples of {ss} bytes"
            )
        if spec.start_bytes // ss < first_usable or spec.end_bytes // ss - 1 > last_usable:
            raise ValueError(
                f"partition spec {n} lies outside the usable sectors "
                f"{first_usable}-{last_usable} of a {io.size}-byte image"
            )
    ordered = sorted(specs, key=lambda s: s.start_bytes)
    for a, b in itertools.pairwise(ordered):
        if b.start_bytes < a.end_bytes:
            raise ValueError(f"partitions at {a.start_bytes} and {b.start_bytes} overlap")


def _mbr_type(type_id: str) -> int:
    value = int(type_id, 16)
    if not 0 < value < 256 or value in MBR_EXTENDED_TYPES or value == MBR_PROTECTIVE_TYPE:
        raise ValueError(f"{type_id!r} is not an MBR data partition type")
    return value


def _chs(lba: int) -> bytes:
    if lba >= CHS_LIMIT:
        return b"\xfe\xff\xff"
    cylinder, rest = divmod(lba, 255 * 63)
    head, sector = divmod(rest, 63)
    return bytes([head, (sector + 1) | ((cylinder >> 2) & 0xC0), cylinder & 0xFF])


def _mbr_entry(
    start: int, count: int, ptype: int, bootable: bool, *, chs_start: int | None = None
) -> bytes:
    """One 16-byte table entry; CHS values use `chs_start` when `start` is relative."""
    absolute = start if chs_start is None else chs_start
    return MBR_ENTRY.pack(
        0x80 if bootable else 0, _chs(absolute), ptype, _chs(absolute + count - 1), start, count
    )


def _boot_record(entries: list[bytes], disk_signature: int) -> bytes:
    sector = bytearray(512)
    struct.pack_into("<I", sector, 440, disk_signature)
    for i, entry in enumerate(entries):
        sector[446 + 16 * i : 462 + 16 * i] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)
