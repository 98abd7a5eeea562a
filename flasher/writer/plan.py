"""What to write: the image's mapped ranges cut into aligned chunks, and their digests.

Standard library only (the root helper uses it). Chunks start on 4 KiB boundaries, are cut at
every multiple of `chunk_bytes` and at the end of the first MiB (the partition-table head, which
is written last), so the chunk layout, and with it the job digest, depends only on the image
size, the ranges and the chunk size. `IoPlan` cuts those chunks into smaller I/O pieces (when
many targets share the helper's memory) without changing the chunks, so the job digest of a
16-card flash equals that of a 1-card flash; `PieceHasher` builds a chunk's digest from its
pieces.
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
# The write buffers of all targets of a job together stay under this, by cutting chunks into
# smaller I/O pieces (no smaller than 1 MiB): with 4 buffers per target, 4 MiB pieces for up to
# 2 targets, 2 MiB for up to 4, 1 MiB beyond (a 16-card bench holds 64 MiB).
WRITE_BUFFERS_BUDGET_BYTES = 32 * MiB


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
        return self.record(index, hashlib.sha256(data).digest())

    def record(self, index: int, digest: bytes) -> bytes:
        """Keep `digest` for chunk `index` unless one is known already; the kept one."""
        with self._lock:
            known = self._digests[index]
            if known is None:
                self._digests[index] = known = digest
        return known

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


def buffers_for(target_count: int, piece_bytes: int, most: int) -> int:
    """How many buffers of `piece_bytes` each of `target_count` targets fills ahead: `most`,
    fewer where the pieces cannot shrink further (`piece_bytes_for`) and the budget would still
    be exceeded, but never under two (one filled while the other is written). Sixteen cards at
    a bench held 4 MiB each for writing and 3 MiB for reading back, 32 cards twice that."""
    fit = WRITE_BUFFERS_BUDGET_BYTES // max(1, target_count * piece_bytes)
    return max(2, min(most, fit))


def piece_bytes_for(target_count: int, chunk_bytes: int, buffers_per_target: int) -> int:
    """The I/O piece size for `target_count` targets: the chunk size, halved while the targets'
    write buffers would exceed the budget, down to 1 MiB."""
    piece = chunk_bytes
    while (
        target_count * buffers_per_target * piece > WRITE_BUFFERS_BUDGET_BYTES
        and piece % (2 * MiB) == 0
    ):
        piece //= 2
    return piece


@dataclass(frozen=True)
class IoPlan:
    """A plan's chunks cut into I/O pieces of at most `pieces.chunk_bytes` bytes.

    Every piece lies inside one chunk (`owner`), and a chunk's pieces follow each other, so a
    chunk's digest is the sha256 of its pieces in order, whatever the piece size.
    """

    plan: WritePlan
    pieces: WritePlan
    owner: tuple[int, ...]

    @classmethod
    def split(cls, plan: WritePlan, piece_bytes: int) -> IoPlan:
        if piece_bytes <= 0 or piece_bytes % HEAD_BYTES or plan.chunk_bytes % piece_bytes:
            raise ValueError("piece_bytes must be a multiple of 1 MiB dividing chunk_bytes")
        pieces: list[Chunk] = []
        owner: list[int] = []
        for index, chunk in enumerate(plan.chunks):
            pos = chunk.offset
            while pos < chunk.end:
                stop = min(chunk.end, (pos // piece_bytes + 1) * piece_bytes)
                pieces.append(Chunk(pos, stop - pos))
                owner.append(index)
                pos = stop
        return cls(plan, WritePlan(plan.image_size_bytes, piece_bytes, tuple(pieces)), tuple(owner))

    def is_first(self, piece: int) -> bool:
        return piece == 0 or self.owner[piece - 1] != self.owner[piece]

    def is_last(self, piece: int) -> bool:
        return piece + 1 == len(self.owner) or self.owner[piece + 1] != self.owner[piece]


class PieceHasher:
    """Hashes one reader's pieces, fed in plan order, into their chunks' digests."""

    def __init__(self, io: IoPlan, digests: ChunkDigests) -> None:
        self._io = io
        self._digests = digests
        self._hash: hashlib._Hash | None = None

    def add(self, piece: int, data: memoryview | bytes) -> bytes | None:
        """Hash a piece; at a chunk's last piece, the chunk's digest (recorded unless known)."""
        if self._io.is_first(piece):
            self._hash = hashlib.sha256()
        elif self._hash is None:
            raise ValueError("a chunk's pieces are hashed from its first piece on")
        self._hash.update(data)
        if not self._io.is_last(piece):
            return None
        digest = self._hash.digest()
        self._hash = None
        return self._digests.record(self._io.owner[piece], digest)
