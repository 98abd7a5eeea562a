"""The allocation map: which byte ranges of an image must reach the card, and which may be skipped.

Inside a partition, skipping is only ever decided by a filesystem's own metadata (ext2/3/4
bitmaps, FAT tables) or by a published .bmap; unknown filesystems, swap, and any filesystem that
cannot be read with confidence are mapped whole. Outside every partition, with or without a
.bmap, the area before the first partition is mapped whole, whatever it holds: boot ROMs and
boot loaders read raw offsets there, and a stale loader (or U-Boot environment) left on a card
from an earlier image must never survive where this image has zeros. Past the start of the first
partition (the gaps between partitions, the extended container around its logical partitions,
the tail after the last one) only the 4 KiB blocks holding a non-zero byte are mapped: these
are alignment gaps, so whatever the image does put there is written, and its zeros are not. The
partition table structures (MBR, EBRs, both GPT headers and
arrays) are always mapped. Small unmapped gaps are then filled in (see
DEFAULT_COALESCE_GAP_BYTES) and edges aligned to whole blocks, because a few extra bytes written
cost less than breaking a sequential write into many small ones.

The bodies of clean ext3/4 journals are neither read nor mapped but listed apart as `scrub`
ranges (flasher.image.ext4journal), with a .bmap too: the writer does not write them but makes sure
no block there on the card could pass for a journal block (flasher.writer.scrub). Scrub ranges
are whole 4 KiB blocks, disjoint from the final mapped ranges: gaps are filled as before and
whatever filling (or an overlay) maps again is taken out of the scrub ranges afterwards.

Imports only the standard library and flasher's errors and image modules.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from flasher.error_codes import ProblemCode
from flasher.errors import ImageError
from flasher.image import ranges as rng
from flasher.image.bmap import read_bmap, verify_bmap
from flasher.image.byteio import ReadAt, SliceIO, data_runs
from flasher.image.ext4 import Ext4Filesystem
from flasher.image.ext4journal import body_ranges
from flasher.image.fat.filesystem import FatFilesystem
from flasher.image.fat.table import parse_boot_sector
from flasher.image.partitions import Partition, PartitionTable, filesystem_of, whole_image

# Free gaps shorter than this are written anyway. Flash media are fast at large sequential
# writes; a small forward jump saves little device time (cards manage space in allocation
# units of several MiB) while it splits one request into two. On the realistic balenaOS test
# image (1.2 GiB) the exact map is 10 ranges and filling gaps up to 1 MiB adds nothing; 4 MiB
# starts pulling in free space (+3.4 MiB on the 0.3-scale image), so 1 MiB is the default.
DEFAULT_COALESCE_GAP_BYTES = 1024 * 1024
DEFAULT_BLOCK_BYTES = 4096
SCRUB_BLOCK_BYTES = 4096
# The gaps between partitions are read in pieces of GAP_READ_BYTES and mapped in 4 KiB blocks
# (on the image's own block grid, byteio.data_runs) wherever a block holds a non-zero byte.
GAP_READ_BYTES = 1024 * 1024


@dataclass(frozen=True)
class PartitionAllocation:
    """How one partition was mapped. `mapped_bytes` is exact (before gaps are filled in)."""

    number: int
    start_bytes: int
    size_bytes: int
    filesystem: str
    method: str  # "ext4", "fat", "bmap", or "whole" when every byte is mapped
    mapped_bytes: int
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "start_bytes": self.start_bytes,
            "size_bytes": self.size_bytes,
            "filesystem": self.filesystem,
            "method": self.method,
            "mapped_bytes": self.mapped_bytes,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class OutsideAllocation:
    """How the bytes outside every partition were mapped: `size_bytes` of them, the first
    `head_bytes` (before the first partition) whole; `mapped_bytes` is exact (before gaps are
    filled in) and counts the head, the partition table structures and the gaps' non-zero
    blocks."""

    size_bytes: int = 0
    head_bytes: int = 0
    mapped_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "head_bytes": self.head_bytes,
            "mapped_bytes": self.mapped_bytes,
        }


@dataclass(frozen=True)
class AllocationMap:
    """Sorted, non-overlapping `(offset, length)` ranges of an image of `size_bytes`, and the
    clean journal bodies to scrub instead of writing (`scrub`, disjoint from `ranges`).
    `partitions` and `outside` say how each area was mapped."""

    size_bytes: int
    ranges: tuple[rng.Range, ...]
    source: str = "filesystems"  # or "bmap"
    partitions: tuple[PartitionAllocation, ...] = ()
    warnings: tuple[str, ...] = ()
    scrub: tuple[rng.Range, ...] = ()
    outside: OutsideAllocation = OutsideAllocation()
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(offset for offset, _ in self.ranges))

    @property
    def mapped_bytes(self) -> int:
        return rng.total(self.ranges)

    @property
    def scrub_bytes(self) -> int:
        return rng.total(self.scrub)

    @property
    def mapped_fraction(self) -> float:
        return self.mapped_bytes / self.size_bytes if self.size_bytes else 1.0

    def contains(self, offset: int) -> bool:
        """Whether the byte at `offset` is mapped."""
        i = bisect.bisect_right(self._starts, offset) - 1
        return i >= 0 and offset < self.ranges[i][0] + self.ranges[i][1]

    def iter_ranges(self, limit_bytes: int) -> Iterator[rng.Range]:
        """The ranges in order, long ones cut into pieces of at most `limit_bytes`."""
        if limit_bytes <= 0:
            raise ValueError("limit must be positive")
        for offset, length in self.ranges:
            for start in range(offset, offset + length, limit_bytes):
                yield start, min(limit_bytes, offset + length - start)

    def coalesced(self, gap_bytes: int) -> AllocationMap:
        """The same map with free gaps shorter than `gap_bytes` mapped too."""
        return replace(self, ranges=tuple(rng.coalesce(self.ranges, gap_bytes)))

    def aligned(self, block_bytes: int) -> AllocationMap:
        """The same map with every range widened to whole `block_bytes` blocks."""
        return replace(self, ranges=tuple(rng.align_out(self.ranges, block_bytes, self.size_bytes)))

    def including(self, extra: Iterable[rng.Range]) -> AllocationMap:
        """The map with `extra` ranges added, e.g. what an overlay changed in a mapped image."""
        merged = rng.merge([*self.ranges, *rng.clip(extra, 0, self.size_bytes)])
        return replace(self, ranges=tuple(merged), scrub=_without(self.scrub, merged))

    def to_dict(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "mapped_bytes": self.mapped_bytes,
            "scrub_bytes": self.scrub_bytes,
            "range_count": len(self.ranges),
            "source": self.source,
            "partitions": [p.to_dict() for p in self.partitions],
            "outside": self.outside.to_dict(),
            "warnings": list(self.warnings),
        }


def allocation_map(
    io: ReadAt,
    table: PartitionTable,
    *,
    bmap_path: str | os.PathLike[str] | None = None,
    verify_bmap_checksums: bool = False,
    coalesce_gap_bytes: int = DEFAULT_COALESCE_GAP_BYTES,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    name: str = "image",
) -> AllocationMap:
    """Map the bytes of `io` that a flash must write.

    A `.bmap` given in `bmap_path` replaces the filesystem analysis inside the partitions (after
    checking it describes an image of this size, and with `verify_bmap_checksums` every range's
    checksum). Either way the area before the first partition and the partition table
    structures are mapped whole, and the rest of the area outside the partitions where it holds
    a non-zero byte: its bytes are read, so `io` must hold the whole image (an image still being
    decoded is mapped once it is complete, flasher.pipeline.prepare). Gaps shorter than
    `coalesce_gap_bytes` are filled and edges widened to `block_bytes`. The body of every clean
    ext3/4 journal, where it stays unmapped, becomes the map's `scrub` ranges.
    """
    partitions = table.data_partitions()
    if table.scheme == "none" and not partitions:
        partitions = (whole_image(io),)
    warnings: list[str] = []
    if bmap_path is not None:
        source = "bmap"
        inside, breakdown = _from_bmap(io, bmap_path, partitions, verify_bmap_checksums, name)
        scrub = [r for p in partitions for r in _journal_scrub(io, p)]
    else:
        source = "filesystems"
        inside, breakdown, warnings, scrub = _from_filesystems(io, partitions)
    outside, outside_usage = _outside(io, partitions, table.metadata_ranges)
    exact = rng.merge([*inside, *outside])
    amap = AllocationMap(
        io.size,
        tuple(exact),
        source,
        tuple(breakdown),
        tuple(warnings),
        outside=outside_usage,
    )
    amap = amap.aligned(block_bytes).coalesced(coalesce_gap_bytes)
    return replace(amap, scrub=_without(scrub, amap.ranges))


def _outside(
    io: ReadAt, partitions: tuple[Partition, ...], metadata: Iterable[rng.Range]
) -> tuple[list[rng.Range], OutsideAllocation]:
    """The mapped ranges outside every partition and their breakdown entry: all of the area
    before the first partition, the table's structures, and past the first partition's start
    the blocks of the gaps that hold a non-zero byte."""
    areas = rng.complement([(p.start_bytes, p.size_bytes) for p in partitions], 0, io.size)
    head_end = min([io.size, *(p.start_bytes for p in partitions)])
    mapped = [(0, head_end), *rng.clip(metadata, 0, io.size)]
    for start, length in rng.clip(areas, head_end, io.size):
        mapped += _nonzero_blocks(io, start, start + length)
    mapped = rng.merge(mapped)
    in_areas = sum(rng.total(rng.clip(mapped, start, start + n)) for start, n in areas)
    return mapped, OutsideAllocation(rng.total(areas), head_end, in_areas)


def _nonzero_blocks(io: ReadAt, start: int, end: int) -> Iterator[rng.Range]:
    """The 4 KiB blocks of [start, end) that hold a non-zero byte, in runs (the blocks at the
    ends cut at `start` and `end`), read GAP_READ_BYTES at a time; bytes `io` cannot give count
    as non-zero."""
    zeros = bytes(min(GAP_READ_BYTES, end - start))
    pos = start
    while pos < end:
        stop = min(end, (pos // GAP_READ_BYTES + 1) * GAP_READ_BYTES)
        data = io.pread(stop - pos, pos)
        got = pos + len(data)
        if data != zeros[: len(data)]:
            for lo, hi in data_runs(data, pos):
                yield pos + lo, hi - lo
        if got < stop:
            yield got, end - got
            return
        pos = stop


def _without(scrub: Iterable[rng.Range], mapped: Iterable[rng.Range]) -> tuple[rng.Range, ...]:
    """The whole scrub blocks of `scrub` that no mapped byte touches."""
    return tuple(rng.align_in(rng.subtract(scrub, mapped), SCRUB_BLOCK_BYTES))


def _slice(io: ReadAt, p: Partition) -> SliceIO:
    return SliceIO(io, p.start_bytes, min(p.size_bytes, io.size - p.start_bytes))


def _journal_scrub(io: ReadAt, p: Partition) -> list[rng.Range]:
    """Image byte ranges of the clean journal body of `p`'s ext3/4 filesystem, in whole scrub
    blocks; empty for any other partition or a filesystem that cannot be read."""
    if filesystem_of(io, p).kind != "ext4":
        return []
    part = _slice(io, p)
    try:
        fs = Ext4Filesystem(part, name="ext4")
    except ImageError:
        return []
    return _journal_body(fs, part, p)


def _journal_body(fs: Ext4Filesystem, part: ReadAt, p: Partition) -> list[rng.Range]:
    body = [(p.start_bytes + off, n) for off, n in body_ranges(fs, part)]
    return rng.align_in(body, SCRUB_BLOCK_BYTES)


def _from_bmap(
    io: ReadAt,
    path: str | os.PathLike[str],
    partitions: tuple[Partition, ...],
    verify: bool,
    name: str,
) -> tuple[list[rng.Range], list[PartitionAllocation]]:
    bmap = read_bmap(path)
    if bmap.image_size != io.size:
        raise ImageError(
            os.fspath(path),
            f"the block map describes {bmap.image_size} bytes but the image has {io.size}",
            problem=ProblemCode.BMAP_MISMATCH,
            hint="Use the .bmap published with this exact image.",
        )
    if verify:
        verify_bmap(io, bmap, name=name)
    exact = bmap.byte_ranges()
    inside = [r for p in partitions for r in rng.clip(exact, p.start_bytes, p.end_bytes)]
    breakdown = [
        PartitionAllocation(
            p.number,
            p.start_bytes,
            p.size_bytes,
            filesystem_of(io, p).kind,
            "bmap",
            rng.total(rng.clip(exact, p.start_bytes, p.end_bytes)),
        )
        for p in partitions
    ]
    return inside, breakdown


def _from_filesystems(
    io: ReadAt, partitions: tuple[Partition, ...]
) -> tuple[list[rng.Range], list[PartitionAllocation], list[str], list[rng.Range]]:
    inside: list[rng.Range] = []
    scrub: list[rng.Range] = []
    breakdown: list[PartitionAllocation] = []
    warnings: list[str] = []
    for p, (usage, used, journal) in zip(partitions, _side_by_side(io, partitions), strict=True):
        if used is None:
            breakdown.append(usage)
            if usage.filesystem != "unknown":
                warnings.append(f"partition {p.number}: {usage.reason}; copying all of it")
            inside.append((p.start_bytes, min(p.end_bytes, io.size) - p.start_bytes))
            continue
        relative = [(off - p.start_bytes, n) for off, n in journal]
        used = rng.subtract(used, relative)
        scrub += journal
        breakdown.append(replace(usage, mapped_bytes=rng.total(used)))
        inside += [(p.start_bytes + off, length) for off, length in used]
    return inside, breakdown, warnings, scrub


_PartitionMap = tuple[PartitionAllocation, list[rng.Range] | None, list[rng.Range]]


def _side_by_side(io: ReadAt, partitions: tuple[Partition, ...]) -> list[_PartitionMap]:
    """Each partition's breakdown entry, used ranges (None: map all of it) and clean journal
    body, the partitions read on threads side by side: their metadata lie apart in the image,
    and on a cold disk the reads then queue together."""
    results: list[_PartitionMap | BaseException | None] = [None] * len(partitions)

    def one(n: int) -> None:
        try:
            results[n] = _analyse(io, partitions[n])
        except BaseException as err:  # raised in the caller, as if mapped there
            results[n] = err

    threads = [
        threading.Thread(target=one, args=(n,), name="flasher-map", daemon=True)
        for n in range(1, len(partitions))
    ]
    for thread in threads:
        thread.start()
    if partitions:
        one(0)
    for thread in threads:
        thread.join()
    done: list[_PartitionMap] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        done.append(result)
    return done


def _analyse(io: ReadAt, p: Partition) -> _PartitionMap:
    """The partition's breakdown entry, its used ranges (None when all of it is mapped) and,
    for ext3/4, its clean journal body (read from the same filesystem object)."""
    kind = filesystem_of(io, p).kind
    whole = PartitionAllocation(
        p.number,
        p.start_bytes,
        p.size_bytes,
        kind,
        "whole",
        p.size_bytes,
        "no filesystem that can be analysed",
    )
    part = _slice(io, p)
    journal: list[rng.Range] = []
    try:
        if kind == "ext4":
            method = "ext4"
            fs = Ext4Filesystem(part, name="ext4")
            used = fs.allocated_ranges()
            journal = _journal_body(fs, part, p)
        elif kind.startswith("fat"):
            method = "fat"
            used = rng.merge([*FatFilesystem(part).allocated_ranges(), *_after_fat(part)])
        else:
            return whole, None, []
    except ImageError as e:
        return replace(whole, reason=e.message), None, []
    usage = PartitionAllocation(
        p.number, p.start_bytes, p.size_bytes, kind, method, rng.total(used)
    )
    return usage, used, journal


def _after_fat(part: ReadAt) -> list[rng.Range]:
    """The bytes of the partition past the last cluster: no FAT driver reads them, but they are
    not the filesystem's to declare free either."""
    geo = parse_boot_sector(part.pread(512, 0))
    if isinstance(geo, str):
        return [(0, part.size)]
    end = geo.data_offset + geo.cluster_count * geo.cluster_size
    return [(end, part.size - end)] if part.size > end else []
