"""Partition tables (MBR with logical partitions, GPT) and finding balenaOS's boot partition.

Reads only, through `ReadAt`; writing tables is `layout.py`'s job. Imports only the standard
library and flasher's errors, io and fat modules.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from flasher.error_codes import ProblemCode
from flasher.errors import ImageError
from flasher.image.byteio import ReadAt, SliceIO
from flasher.image.fat.filesystem import FatFilesystem, probe_fat

BOOT_LABELS = ("resin-boot", "flash-boot", "balena-boot")
MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
MBR_PROTECTIVE_TYPE = 0xEE
GPT_SIGNATURE = b"EFI PART"
GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
GPT_ENTRY = struct.Struct("<16s16sQQQ72s")
MBR_ENTRY = struct.Struct("<B3sB3sII")
# A logical-partition chain longer than this is a loop or garbage, not a real layout.
MAX_LOGICAL_PARTITIONS = 128
MAX_GPT_ENTRIES_BYTES = 1 << 20
EXT_MAGIC_OFFSET = 1024 + 0x38
EXT_LABEL_OFFSET = 1024 + 0x78

Scheme = Literal["mbr", "gpt", "none"]


def _guid(raw: bytes) -> str:
    """A GUID as GPT stores it (mixed-endian) in its usual text form; uuid loads for GPT only."""
    import uuid

    return str(uuid.UUID(bytes_le=raw))


@dataclass(frozen=True)
class Partition:
    """One partition. `number` is what Linux calls it (sdX<number>); 0 means the whole image."""

    number: int
    start_bytes: int
    size_bytes: int
    type_id: str
    name: str = ""
    bootable: bool = False
    is_extended: bool = False
    uuid: str = ""

    @property
    def end_bytes(self) -> int:
        return self.start_bytes + self.size_bytes


@dataclass(frozen=True)
class PartitionTable:
    scheme: Scheme
    partitions: tuple[Partition, ...]
    disk_size: int
    sector_size: int = 512
    metadata_ranges: tuple[tuple[int, int], ...] = ()
    warnings: tuple[str, ...] = ()
    disk_id: str = ""

    def data_partitions(self) -> tuple[Partition, ...]:
        """Partitions that can hold a filesystem (not the extended container)."""
        return tuple(p for p in self.partitions if not p.is_extended)


@dataclass(frozen=True)
class FsInfo:
    """What a partition holds: "fat12", "fat16", "fat32", "ext4" (any ext2/3/4) or "unknown"."""

    kind: str
    label: str = ""


def read_partition_table(io: ReadAt, *, name: str, early: bool = False) -> PartitionTable:
    """Parse the image's partition table; ImageError names anything corrupt or truncated.

    `early` reads only the start of the disk (the primary MBR entries without the logical
    partitions, or the primary GPT without its backup): enough to find the boot partition of
    an image still being decoded."""
    if io.size < 512:
        raise ImageError(
            name,
            f"is only {io.size} bytes, too small for a disk image",
            problem=ProblemCode.TRUNCATED,
        )
    mbr = io.pread(512, 0)
    if mbr[510:512] != b"\x55\xaa" or probe_fat(mbr) is not None:
        return PartitionTable("none", (), io.size)
    entries = [MBR_ENTRY.unpack_from(mbr, 446 + 16 * i) for i in range(4)]
    for slot, entry in enumerate(entries, start=1):
        if entry[0] not in (0x00, 0x80):
            raise ImageError(
                name,
                f"MBR entry {slot} has an invalid status byte 0x{entry[0]:02x}",
                problem=ProblemCode.BAD_PARTITION_TABLE,
            )
    if any(e[2] == MBR_PROTECTIVE_TYPE for e in entries):
        return _GptReader(io, name).read(early=early)
    return _read_mbr(io, name, entries, int.from_bytes(mbr[440:444], "little"), early=early)


def _read_mbr(
    io: ReadAt,
    name: str,
    entries: list[tuple[int, bytes, int, bytes, int, int]],
    signature: int,
    *,
    early: bool = False,
) -> PartitionTable:
    parts: list[Partition] = []
    meta = [(0, 512)]
    for slot, (status, _, ptype, _, start, count) in enumerate(entries, start=1):
        if ptype == 0 or count == 0:
            continue
        if start == 0:
            raise ImageError(
                name,
                f"partition {slot} starts on the MBR sector",
                problem=ProblemCode.BAD_PARTITION_TABLE,
            )
        parts.append(
            Partition(
                slot,
                start * 512,
                count * 512,
                f"0x{ptype:02x}",
                bootable=status == 0x80,
                is_extended=ptype in MBR_EXTENDED_TYPES,
            )
        )
    next_number = 5
    for container in [p for p in parts if p.is_extended and not early]:
        for logical, ebr_offset in _walk_ebr_chain(io, name, container, next_number):
            parts.append(logical)
            meta.append((ebr_offset, 512))
            next_number += 1
    _check_bounds(io, name, parts)
    return PartitionTable(
        "mbr", tuple(parts), io.size, 512, tuple(meta), disk_id=f"0x{signature:08x}"
    )


def _walk_ebr_chain(
    io: ReadAt, name: str, container: Partition, first_number: int
) -> Iterator[tuple[Partition, int]]:
    """Follow the EBR linked list inside `container`, yielding each logical and its EBR offset."""
    base = container.start_bytes // 512
    limit = container.end_bytes // 512
    ebr_lba = base
    seen: set[int] = set()
    number = first_number
    while True:
        if ebr_lba in seen or len(seen) >= MAX_LOGICAL_PARTITIONS:
            raise ImageError(
                name,
                f"the logical partition chain loops back to sector {ebr_lba}",
                problem=ProblemCode.BAD_PARTITION_TABLE,
            )
        seen.add(ebr_lba)
        if not base <= ebr_lba < limit:
            raise ImageError(
                name,
                f"an extended boot record at sector {ebr_lba} lies outside the extended partition",
                problem=ProblemCode.BAD_PARTITION_TABLE,
            )
        ebr = io.pread(512, ebr_lba * 512)
        if len(ebr) < 512:
            raise ImageError(
                name,
                f"the extended boot record at sector {ebr_lba} is past the end of the image",
                problem=ProblemCode.TRUNCATED,
            )
        if ebr[510:512] != b"\x55\xaa":
            raise ImageError(
                name,
                f"the extended boot record at sector {ebr_lba} has no 0x55AA signature",
                problem=ProblemCode.BAD_PARTITION_TABLE,
            )
        status, _, ptype, _, rel_start, count = MBR_ENTRY.unpack_from(ebr, 446)
        if ptype != 0 and count != 0 and ptype not in MBR_EXTENDED_TYPES:
            start = ebr_lba + rel_start
            if rel_start == 0 or start + count > limit:
                raise ImageError(
                    name,
                    f"logical partition {number} lies outside the extended partition",
                    problem=ProblemCode.BAD_PARTITION_TABLE,
                )
            yield (
                Partition(
                    number, start * 512, count * 512, f"0x{ptype:02x}", bootable=status == 0x80
                ),
                ebr_lba * 512,
            )
            number += 1
        _, _, link_type, _, link_start, link_count = MBR_ENTRY.unpack_from(ebr, 462)
        if link_type not in MBR_EXTENDED_TYPES or link_count == 0:
            return
        ebr_lba = base + link_start


def _check_bounds(io: ReadAt, name: str, parts: list[Partition]) -> None:
    for p in parts:
        if p.end_bytes > io.size:
            raise ImageError(
                name,
                f"partition {p.number} ends at byte {p.end_bytes}, past the "
                f"end of the image ({io.size} bytes)",
                problem=ProblemCode.TRUNCATED,
                hint="The image file is incomplete; download it again.",
            )
    data = sorted((p for p in parts if not p.is_extended), key=lambda p: p.start_bytes)
    for a, b in itertools.pairwise(data):
        if b.start_bytes < a.end_bytes:
            raise ImageError(
                name,
                f"partitions {a.number} and {b.number} overlap",
                problem=ProblemCode.BAD_PARTITION_TABLE,
            )
    for c in (p for p in parts if p.is_extended):
        for p in data:
            apart = p.end_bytes <= c.start_bytes or p.start_bytes >= c.end_bytes
            if p.number <= 4 and not apart:
                raise ImageError(
                    name,
                    f"partition {p.number} overlaps the extended partition",
                    problem=ProblemCode.BAD_PARTITION_TABLE,
                )


@dataclass
class _GptHeader:
    sector_size: int
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: bytes
    entries_lba: int
    entry_count: int
    entry_size: int
    entries: bytes = field(repr=False)

    @property
    def entries_bytes(self) -> int:
        return self.entry_count * self.entry_size

    def ranges(self) -> list[tuple[int, int]]:
        ss = self.sector_size
        span = -(-self.entries_bytes // ss) * ss
        return [(self.my_lba * ss, ss), (self.entries_lba * ss, span)]


class _GptReader:
    def __init__(self, io: ReadAt, name: str) -> None:
        self.io = io
        self.name = name

    def read(self, *, early: bool = False) -> PartitionTable:
        primary = self._first_header(lambda ss: 1)
        backup: _GptHeader | str
        if isinstance(primary, _GptHeader) and early:
            header, backup, warnings = primary, "not read yet", []
        elif isinstance(primary, _GptHeader):
            header = primary
            backup = self._header_at(primary.alternate_lba, primary.sector_size)
            warnings = (
                []
                if isinstance(backup, _GptHeader)
                else [f"the backup GPT header is unusable ({backup}); the primary one was used"]
            )
        else:
            backup = self._first_header(lambda ss: self.io.size // ss - 1)
            if isinstance(backup, str):
                raise ImageError(
                    self.name,
                    f"the GPT is corrupt: primary: {primary}; backup: {backup}",
                    problem=ProblemCode.BAD_PARTITION_TABLE,
                    hint="The image is damaged; download it again.",
                )
            header = backup
            warnings = [f"the primary GPT header is unusable ({primary}); the backup one was used"]
        ss = header.sector_size
        meta = [(0, ss), *header.ranges()]
        if header is backup:
            # Where the primary header and entries belong, so a writer copies them as they are.
            meta += [(header.alternate_lba * ss, ss), (2 * ss, header.ranges()[1][1])]
        elif isinstance(backup, _GptHeader):
            meta += backup.ranges()
        else:
            meta.append(((self.io.size // ss - 1) * ss, ss))
        parts = self._partitions(header)
        _check_bounds(self.io, self.name, parts)
        return PartitionTable(
            "gpt",
            tuple(parts),
            self.io.size,
            ss,
            tuple(sorted(set(meta))),
            tuple(warnings),
            _guid(header.disk_guid),
        )

    def _first_header(self, lba_for: Callable[[int], int]) -> _GptHeader | str:
        """The header at `lba_for(sector size)` for 512- then 4096-byte sectors, or why not."""
        problem = ""
        for ss in (512, 4096):
            got = self._header_at(lba_for(ss), ss)
            if isinstance(got, _GptHeader):
                return got
            problem = problem or got
        return problem

    def _header_at(self, lba: int, ss: int) -> _GptHeader | str:
        """The header at `lba`, or a sentence saying why there is none."""
        raw = self.io.pread(ss, lba * ss)
        if lba <= 0 or len(raw) < ss:
            return f"sector {lba} is past the end of the image"
        if raw[:8] != GPT_SIGNATURE:
            return f"no GPT signature at sector {lba}"
        (
            _,
            _revision,
            hsize,
            hcrc,
            _,
            my_lba,
            alt_lba,
            first,
            last,
            guid,
            entries_lba,
            count,
            esize,
            ecrc,
        ) = GPT_HEADER.unpack_from(raw)
        if not 92 <= hsize <= ss:
            return f"header size {hsize} is invalid"
        if zlib.crc32(raw[:16] + b"\0\0\0\0" + raw[20:hsize]) != hcrc:
            return f"header CRC32 mismatch at sector {lba}"
        if my_lba != lba:
            return f"header at sector {lba} says it is at sector {my_lba}"
        if esize < 128 or esize % 8 or count * esize > MAX_GPT_ENTRIES_BYTES:
            return f"{count} entries of {esize} bytes is not a valid entry array"
        if first > last:
            return "first usable sector is after the last one"
        entries = self.io.pread(count * esize, entries_lba * ss)
        if len(entries) < count * esize:
            return "the partition entry array is past the end of the image"
        if zlib.crc32(entries) != ecrc:
            return "partition entry array CRC32 mismatch"
        return _GptHeader(
            ss, my_lba, alt_lba, first, last, guid, entries_lba, count, esize, entries
        )

    def _partitions(self, header: _GptHeader) -> list[Partition]:
        parts: list[Partition] = []
        ss = header.sector_size
        for index in range(header.entry_count):
            raw = header.entries[index * header.entry_size :][: GPT_ENTRY.size]
            type_guid, part_guid, first, last, attrs, raw_name = GPT_ENTRY.unpack(raw)
            if type_guid == bytes(16):
                continue
            number = index + 1
            if last < first:
                raise ImageError(
                    self.name,
                    f"GPT partition {number} ends before it starts",
                    problem=ProblemCode.BAD_PARTITION_TABLE,
                )
            if first < header.first_usable or last > header.last_usable:
                raise ImageError(
                    self.name,
                    f"GPT partition {number} lies outside the usable sectors",
                    problem=ProblemCode.BAD_PARTITION_TABLE,
                )
            parts.append(
                Partition(
                    number,
                    first * ss,
                    (last - first + 1) * ss,
                    _guid(type_guid),
                    name=raw_name.decode("utf-16-le", "replace").split("\0", 1)[0],
                    bootable=bool(attrs & 0b100),
                    uuid=_guid(part_guid),
                )
            )
        return parts


def filesystem_of(io: ReadAt, partition: Partition) -> FsInfo:
    """Identify the filesystem in `partition` by its superblock; never raises on garbage."""
    if partition.is_extended:
        return FsInfo("unknown")
    part = SliceIO(io, partition.start_bytes, partition.size_bytes)
    fat = probe_fat(part.pread(512, 0))
    if fat is not None:
        try:
            return FsInfo(fat, FatFilesystem(part).label)
        except ImageError:
            return FsInfo(fat)
    if part.pread(2, EXT_MAGIC_OFFSET) == b"\x53\xef":
        label = part.pread(16, EXT_LABEL_OFFSET).split(b"\0", 1)[0]
        return FsInfo("ext4", label.decode("utf-8", "replace"))
    return FsInfo("unknown")


def whole_image(io: ReadAt) -> Partition:
    """The pseudo-partition used when an image has no partition table."""
    return Partition(0, 0, io.size, "")


def find_boot_partition(io: ReadAt, table: PartitionTable) -> Partition | None:
    """The boot partition, chosen as balena's tools choose it.

    By GPT name or filesystem label (resin-boot, flash-boot, balena-boot; FAT labels are
    case-insensitive, so the comparison is too); else the first FAT
    partition holding /device-type.json; else partition 1. No table: the whole image.
    """
    if table.scheme == "none":
        return whole_image(io)
    labels = {label.casefold() for label in BOOT_LABELS}
    candidates = table.data_partitions()
    infos: dict[int, FsInfo] = {}

    def info(p: Partition) -> FsInfo:
        # Probed in order and only as needed: an image still being decoded has its boot
        # partition long before the partitions after it.
        if p.number not in infos:
            infos[p.number] = filesystem_of(io, p)
        return infos[p.number]

    for p in candidates:
        if p.name.casefold() in labels or info(p).label.casefold() in labels:
            return p
    for p in candidates:
        if info(p).kind.startswith("fat"):
            try:
                fs = FatFilesystem(SliceIO(io, p.start_bytes, p.size_bytes))
                if fs.exists("/device-type.json"):
                    return p
            except ImageError:
                continue
    return next((p for p in candidates if p.number == 1), None)
