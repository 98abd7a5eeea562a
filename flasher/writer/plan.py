"""What to write: the image's mapped ranges cut into aligned chunks, and their digests.

Standard library only (the root helper uses it). Chunks start on 4 KiB boundaries, are cut at
every multiple of `chunk_bytes` and at the end of the first MiB (the partition-table head, which
is written last), so the chunk layout, and with it the job digest, depends only on the image
size, the ranges and the chunk size.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MiB = 1024 * 1024
HEAD_BYTES = 1 * MiB
ALIGN_BYTES = 4096
# Gaps shorter than this between mapped ranges are written too: one large sequential write is
# faster on cards than two writes and a seek, and the bytes in a gap are the image's own.
COALESCE_GAP_BYTES = 1 * MiB


@dataclass(frozen=True)
class Chunk:
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def extents(
    image_size_bytes: int,
    ranges: Iterable[tuple[int, int]] | None,
    *,
    coalesce_gap_bytes: int = COALESCE_GAP_BYTES,
) -> list[tuple[int, int]]:
    """Aligned, merged (start, end) byte extents covering `ranges` (None = the whole image)."""
    if ranges is None:
        return [(0, image_size_bytes)] if image_size_bytes else []
    out: list[tuple[int, int]] = []
    for offset, length in sorted(ranges):
        if length <= 0:
            continue
        start = offset // ALIGN_BYTES * ALIGN_BYTES
        end = min(round_up(offset + length, ALIGN_BYTES), image_size_bytes)
        if start >= end:
            continue
        if out and start <= out[-1][1] + coalesce_gap_bytes:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


@dataclass(frozen=True)
class WritePlan:
    image_size_bytes: int
    chunk_bytes: int
    chunks: tuple[Chunk, ...]

    @classmethod
    def build(
        cls,
        image_size_bytes: int,
        ranges: Iterable[tuple[int, int]] | None,
        *,
        chunk_bytes: int = 4 * MiB,
        write_all: bool = False,
        overlay_ranges: Iterable[tuple[int, int]] = (),
    ) -> WritePlan:
        """Chunks covering `ranges` (None or `write_all`: the whole image).

        The overlay's ranges are always included: they are the configured bytes, and an
        allocation map computed before configuring may not cover them.
        """
        if chunk_bytes <= 0 or chunk_bytes % HEAD_BYTES:
            raise ValueError("chunk_bytes must be a positive multiple of 1 MiB")
        wanted = None if write_all or ranges is None else [*ranges, *overlay_ranges]
        chunks: list[Chunk] = []
        for start, end in extents(image_size_bytes, wanted):
            pos = start
            while pos < end:
                boundary = (pos // chunk_bytes + 1) * chunk_bytes
                if pos < HEAD_BYTES:
                    boundary = min(boundary, HEAD_BYTES)
                stop = min(end, boundary)
                chunks.append(Chunk(pos, stop - pos))
                pos = stop
        return cls(image_size_bytes, chunk_bytes, tuple(chunks))

    @property
    def total_bytes(self) -> int:
        return sum(c.length for c in self.chunks)

    def head_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.chunks) if c.offset < HEAD_BYTES]

    def body_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.chunks) if c.offset >= HEAD_BYTES]

    def order(self) -> list[int]:
        """Chunk indices in image order (the head first: its bytes are read first, written last)."""
        return list(range(len(self.chunks)))


class ChunkDigests:
    """The sha256 of each chunk's image bytes, computed once and shared by all targets."""

    def __init__(self, plan: WritePlan) -> None:
        self._digests: list[bytes | None] = [None] * len(plan.chunks)
        self._lock = threading.Lock()

    def get(self, index: int) -> bytes | None:
        return self._digests[index]

    def ensure(self, index: int, data: memoryview | bytes) -> bytes:
        """The digest of chunk `index`, hashing `data` only if nobody has yet."""
        known = self._digests[index]
        if known is not None:
            return known
        digest = hashlib.sha256(data).digest()
        with self._lock:
            if self._digests[index] is None:
                self._digests[index] = digest
        return digest

    def complete(self) -> bool:
        return all(d is not None for d in self._digests)

    def root(self, indices: Sequence[int] | None = None) -> str:
        """The job digest: sha256 over the chunk digests in image order."""
        h = hashlib.sha256()
        for i in range(len(self._digests)) if indices is None else indices:
            digest = self._digests[i]
            if digest is None:
                raise ValueError(f"chunk {i} has not been hashed")
            h.update(digest)
        return h.hexdigest()
