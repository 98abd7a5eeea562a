"""Arithmetic on sorted byte ranges `(offset, length)`: merge, coalesce, align, complement.

Shared by the filesystem readers and the allocation map. Imports only the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

Range = tuple[int, int]


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, non-overlapping ranges covering the same bytes; touching ranges become one."""
    return coalesce(ranges, 0)


def coalesce(ranges: Iterable[Range], gap_bytes: int) -> list[Range]:
    """Like `merge`, but also joins ranges separated by fewer than `gap_bytes` bytes."""
    out: list[Range] = []
    end = -1
    for offset, length in sorted(r for r in ranges if r[1] > 0):
        if out and offset - end < max(gap_bytes, 1):
            start = out[-1][0]
            end = max(end, offset + length)
            out[-1] = (start, end - start)
        else:
            out.append((offset, length))
            end = offset + length
    return out


def align_out(ranges: Iterable[Range], block_bytes: int, limit_bytes: int) -> list[Range]:
    """Widen every range to whole `block_bytes` blocks, clipped to [0, limit_bytes)."""
    if block_bytes <= 0:
        raise ValueError("block size must be positive")
    widened = []
    for offset, length in ranges:
        start = offset - offset % block_bytes
        end = -(-(offset + length) // block_bytes) * block_bytes
        widened.append((start, min(end, limit_bytes) - start))
    return merge(r for r in widened if r[0] < limit_bytes)


def complement(ranges: Iterable[Range], start: int, end: int) -> list[Range]:
    """The parts of [start, end) that none of `ranges` covers."""
    out: list[Range] = []
    cursor = start
    for offset, length in merge(ranges):
        if offset + length <= cursor:
            continue
        if offset >= end:
            break
        if offset > cursor:
            out.append((cursor, offset - cursor))
        cursor = max(cursor, offset + length)
    if cursor < end:
        out.append((cursor, end - cursor))
    return out


def clip(ranges: Iterable[Range], start: int, end: int) -> list[Range]:
    """The parts of `ranges` inside [start, end)."""
    out = []
    for offset, length in ranges:
        lo, hi = max(offset, start), min(offset + length, end)
        if hi > lo:
            out.append((lo, hi - lo))
    return out


def total(ranges: Iterable[Range]) -> int:
    return sum(length for _, length in ranges)


def set_bit_runs(bitmap: bytes, bit_count: int) -> Iterator[Range]:
    """Runs `(first_bit, count)` of 1 bits among the first `bit_count` bits (LSB first per byte).

    Works on one big integer: each step strips a run of zeros then a run of ones, so the cost
    follows the number of runs rather than the number of bits.
    """
    value = int.from_bytes(bitmap[: (bit_count + 7) // 8], "little")
    value &= (1 << bit_count) - 1
    position = 0
    while value:
        zeros = (value & -value).bit_length() - 1
        value >>= zeros
        position += zeros
        ones = (~value & (value + 1)).bit_length() - 1
        yield position, ones
        value >>= ones
        position += ones


def align_in(ranges: Iterable[Range], block_bytes: int) -> list[Range]:
    """The whole `block_bytes` blocks inside each of the merged `ranges`."""
    out = []
    for offset, length in merge(ranges):
        start = -(-offset // block_bytes) * block_bytes
        end = (offset + length) // block_bytes * block_bytes
        if end > start:
            out.append((start, end - start))
    return out


def subtract(ranges: Iterable[Range], removed: Iterable[Range]) -> list[Range]:
    """The bytes of `ranges` that none of `removed` covers, merged."""
    kept = merge(ranges)
    if not kept:
        return []
    end = kept[-1][0] + kept[-1][1]
    holes = complement(kept, 0, end)
    return complement([*holes, *removed], kept[0][0], end)
