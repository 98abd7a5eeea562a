"""Read and edit FAT12/16/32 filesystems through positional I/O, touching only what changes.

pyfatfs was evaluated and not used: it needs a file object, rewrites every whole FAT on each
flush (so an overlay would hold the full table, not a few sectors) and stamps files with the
wall clock; here writes go through `WriteAt`, timestamps are the caller's, and output is
byte-for-byte deterministic. Imports only the standard library and flasher's errors, byteio and
fat* modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from flasher.error_codes import ProblemCode
from flasher.errors import ImageError
from flasher.image.byteio import ReadAt, WriteAt
from flasher.image.fat.entries import (
    ATTR_ARCHIVE,
    ATTR_DIRECTORY,
    DELETED,
    DOT_NAME,
    DOTDOT_NAME,
    ENTRY_SIZE,
    FAT_EPOCH,
    Listing,
    Record,
    Stamp,
    display_short,
    fat_stamp,
    lfn_entries,
    long_name_problem,
    parse_directory,
    short_entry,
    short_name_for,
    updated_entry,
)
from flasher.image.fat.mkfs import format_fat
from flasher.image.fat.table import Fat, Geometry, parse_boot_sector

__all__ = ["DirEntry", "FatFilesystem", "format_fat", "probe_fat"]


@dataclass(frozen=True)
class DirEntry:
    name: str
    is_dir: bool
    size: int


def probe_fat(boot: bytes) -> str | None:
    """ "fat12", "fat16" or "fat32" when `boot` is a valid FAT boot sector, else None."""
    geo = parse_boot_sector(boot)
    return None if isinstance(geo, str) else f"fat{geo.bits}"


@dataclass
class _Dir:
    """A directory's bytes and where they live: the fixed root (cluster 0) or a cluster chain."""

    cluster: int
    extents: list[tuple[int, int]]
    data: bytearray
    is_root: bool = False

    def offset_of(self, slot: int) -> int:
        at = slot * ENTRY_SIZE
        for offset, length in self.extents:
            if at < length:
                return offset + at
            at -= length
        raise IndexError(slot)


class FatFilesystem:
    """One FAT filesystem in `io` (a partition slice). Paths are `/`-separated, case-insensitive.

    Writes need `io` to be a WriteAt; `name` is used in error messages.
    """

    def __init__(self, io: ReadAt, *, name: str = "FAT filesystem") -> None:
        self._io = io
        self.name = name
        geo = parse_boot_sector(io.pread(512, 0))
        if isinstance(geo, str):
            raise self._error(f"not a usable FAT filesystem: {geo}", ProblemCode.BAD_FILESYSTEM)
        end = geo.data_offset + geo.cluster_count * geo.cluster_size
        if end > io.size:
            raise self._error(
                f"the filesystem needs {end} bytes but its partition has {io.size}",
                ProblemCode.BAD_FILESYSTEM,
            )
        self._geo: Geometry = geo
        self._fat_cache: Fat | None = None

    @property
    def fat_type(self) -> str:
        return f"fat{self._geo.bits}"

    @property
    def geometry(self) -> Geometry:
        """Where the boot sector, FATs, root directory and data area lie."""
        return self._geo

    @property
    def cluster_size(self) -> int:
        return self._geo.cluster_size

    @property
    def free_bytes(self) -> int:
        return self._fat.free_count * self._geo.cluster_size

    @property
    def label(self) -> str:
        """The root directory's volume label entry, else the boot sector's; "" when none."""
        root_label = self._listing(self._root()).label
        return root_label if root_label is not None else self._geo.bpb_label

    def _error(self, message: str, problem: ProblemCode) -> ImageError:
        hint = (
            "Run fsck.fat on the image, or download it again."
            if problem == "bad_filesystem"
            else None
        )
        return ImageError(self.name, message, problem=problem, hint=hint)

    @property
    def _fat(self) -> Fat:
        if self._fat_cache is None:
            self._fat_cache = Fat(self._io, self._geo, self.name)
        return self._fat_cache

    @property
    def _writer(self) -> WriteAt:
        if not isinstance(self._io, WriteAt):
            raise TypeError("this FAT filesystem was opened read-only")
        return self._io

    # -- directories -------------------------------------------------------------------------

    def _root(self) -> _Dir:
        geo = self._geo
        if geo.bits != 32:
            return _Dir(
                0,
                [(geo.root_offset, geo.root_bytes)],
                bytearray(self._io.pread(geo.root_bytes, geo.root_offset)),
                True,
            )
        root = self._chain_dir(geo.root_cluster)
        root.is_root = True
        return root

    def _chain_dir(self, cluster: int) -> _Dir:
        size = self._geo.cluster_size
        extents = [(self._geo.cluster_offset(c), size) for c in self._fat.chain(cluster)]
        return _Dir(cluster, extents, bytearray(self._read_extents(extents)))

    def _read_extents(self, extents: list[tuple[int, int]]) -> bytes:
        chunks: list[bytes] = []
        for offset, length in _coalesce(extents):
            chunk = self._io.pread(length, offset)
            if len(chunk) < length:
                raise self._error(
                    "a cluster lies past the end of the partition", ProblemCode.BAD_FILESYSTEM
                )
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _listing(d: _Dir) -> Listing:
        return parse_directory(bytes(d.data))

    @staticmethod
    def _find(listing: Listing, name: str) -> Record | None:
        wanted = name.upper()
        for record in listing.records:
            if record.name.upper() == wanted or record.short_display == wanted:
                return record
        return None

    def _walk(self, parts: list[str], path: str) -> _Dir:
        d = self._root()
        for i, part in enumerate(parts):
            record = self._find(self._listing(d), part)
            where = "/" + "/".join(parts[: i + 1])
            if record is None:
                raise self._error(
                    f"{where} does not exist (looking for {path})", ProblemCode.NOT_FOUND
                )
            if not record.is_dir:
                raise self._error(
                    f"{where} is a file, not a directory", ProblemCode.NOT_A_DIRECTORY
                )
            d = self._chain_dir(record.first_cluster) if record.first_cluster else self._root()
        return d

    def _lookup(self, path: str) -> tuple[_Dir, Record | None, str]:
        """The parent directory of `path`, its record there (None if absent) and its leaf name."""
        parts = _split(path)
        if not parts:
            raise self._error(
                "the root directory has no entry of its own", ProblemCode.IS_A_DIRECTORY
            )
        parent = self._walk(parts[:-1], path)
        return parent, self._find(self._listing(parent), parts[-1]), parts[-1]

    # -- reading -----------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        try:
            parts = _split(path)
            if parts:
                _, record, _ = self._lookup(path)
                return record is not None
            return True
        except ImageError as exc:
            if exc.problem in ("not_found", "not_a_directory"):
                return False
            raise

    def listdir(self, path: str = "/") -> list[DirEntry]:
        d = self._walk(_split(path), path)
        return [DirEntry(r.name, r.is_dir, r.size) for r in self._listing(d).records]

    def read_file(self, path: str) -> bytes:
        _, record, _ = self._lookup(path)
        if record is None:
            raise self._error(f"{path} does not exist", ProblemCode.NOT_FOUND)
        if record.is_dir:
            raise self._error(f"{path} is a directory", ProblemCode.IS_A_DIRECTORY)
        if record.size == 0:
            return b""
        if record.first_cluster == 0:
            raise self._error(
                f"{path} has {record.size} bytes but no clusters", ProblemCode.BAD_FILESYSTEM
            )
        clusters = self._fat.chain(record.first_cluster)
        needed = -(-record.size // self._geo.cluster_size)
        if len(clusters) < needed:
            raise self._error(
                f"{path} has {record.size} bytes but only {len(clusters)} clusters",
                ProblemCode.BAD_FILESYSTEM,
            )
        return self._read_extents(self._extents(clusters[:needed]))[: record.size]

    def _extents(self, clusters: list[int]) -> list[tuple[int, int]]:
        size = self._geo.cluster_size
        return [(self._geo.cluster_offset(c), size) for c in clusters]

    def allocated_ranges(self) -> list[tuple[int, int]]:
        """(offset, length) of the reserved area, FATs, fixed root and every used cluster."""
        geo = self._geo
        ranges = [(0, geo.data_offset)]
        ranges += [
            (geo.cluster_offset(first), count * geo.cluster_size)
            for first, count in self._fat.allocated_runs()
        ]
        return _coalesce(ranges)

    # -- writing -----------------------------------------------------------------------------

    def write_file(self, path: str, data: bytes, *, mtime: datetime | int) -> None:
        """Create or replace the file at `path` (its directory must exist) with `data`.

        An existing file keeps its cluster chain as far as it goes; extra clusters are freed or
        new ones taken from the lowest free cluster up. Nothing is written when it cannot fit.
        """
        with self._undo_on_error():
            parent, record, leaf = self._lookup(path)
            stamp = fat_stamp(mtime)
            needed = -(-len(data) // self._geo.cluster_size)
            if record is None:
                plan = self._plan_insert(parent, leaf, extra_clusters=needed)
                clusters = self._resize_chain([], len(data))
                self._write_clusters(clusters, data)
                self._commit_insert(
                    parent, plan, ATTR_ARCHIVE, clusters[0] if clusters else 0, len(data), stamp
                )
                return
            if record.is_dir:
                raise self._error(f"{path} is a directory", ProblemCode.IS_A_DIRECTORY)
            old = self._fat.chain(record.first_cluster) if record.first_cluster else []
            clusters = self._resize_chain(old, len(data))
            self._write_clusters(clusters, data)
            at = record.slot * ENTRY_SIZE
            entry = updated_entry(
                bytes(parent.data[at : at + ENTRY_SIZE]),
                clusters[0] if clusters else 0,
                len(data),
                stamp,
            )
            self._fat.flush(self._writer)
            self._put_slots(parent, record.slot, [entry])

    def makedirs(self, path: str, *, mtime: datetime | int = FAT_EPOCH) -> None:
        """Create `path` and any missing parents; existing directories are left as they are."""
        parts = _split(path)
        stamp = fat_stamp(mtime)
        with self._undo_on_error():
            d = self._root()
            for i, part in enumerate(parts):
                record = self._find(self._listing(d), part)
                if record is None:
                    plan = self._plan_insert(d, part, extra_clusters=1)
                    (cluster,) = self._fat.allocate(1)
                    body = bytearray(self._geo.cluster_size)
                    body[:ENTRY_SIZE] = short_entry(DOT_NAME, ATTR_DIRECTORY, cluster, 0, stamp)
                    body[ENTRY_SIZE : 2 * ENTRY_SIZE] = short_entry(
                        DOTDOT_NAME, ATTR_DIRECTORY, 0 if d.is_root else d.cluster, 0, stamp
                    )
                    self._writer.pwrite(bytes(body), self._geo.cluster_offset(cluster))
                    self._commit_insert(d, plan, ATTR_DIRECTORY, cluster, 0, stamp)
                    d = self._chain_dir(cluster)
                elif record.is_dir:
                    d = (
                        self._chain_dir(record.first_cluster)
                        if record.first_cluster
                        else self._root()
                    )
                else:
                    where = "/" + "/".join(parts[: i + 1])
                    raise self._error(
                        f"{where} is a file, not a directory", ProblemCode.NOT_A_DIRECTORY
                    )

    def remove(self, path: str) -> None:
        """Delete a file or an empty directory."""
        with self._undo_on_error():
            parent, record, _ = self._lookup(path)
            if record is None:
                raise self._error(f"{path} does not exist", ProblemCode.NOT_FOUND)
            clusters = self._fat.chain(record.first_cluster) if record.first_cluster else []
            if record.is_dir and self._listing(self._chain_dir(record.first_cluster)).records:
                raise self._error(f"{path} is a directory that is not empty", ProblemCode.NOT_EMPTY)
            self._fat.free(clusters)
            self._fat.flush(self._writer)
            deleted = []
            for slot in range(record.first_slot, record.slot + 1):
                at = slot * ENTRY_SIZE
                deleted.append(bytes([DELETED]) + bytes(parent.data[at + 1 : at + ENTRY_SIZE]))
            self._put_slots(parent, record.first_slot, deleted)

    @contextmanager
    def _undo_on_error(self) -> Iterator[None]:
        """Forget in-memory table changes when an operation fails, so the next one starts clean."""
        try:
            yield
        except BaseException:
            self._fat_cache = None
            raise

    def _resize_chain(self, old: list[int], size: int) -> list[int]:
        needed = -(-size // self._geo.cluster_size)
        if needed <= len(old):
            self._fat.free(old[needed:])
            if needed:
                self._fat.set(old[needed - 1], self._fat.eoc)
            return old[:needed]
        return old + self._fat.allocate(needed - len(old), after=old[-1] if old else 0)

    def _write_clusters(self, clusters: list[int], data: bytes) -> None:
        """Write `data` over `clusters`, zero-filling the last cluster's slack."""
        size = self._geo.cluster_size
        padded = data + bytes(-len(data) % size)
        at = 0
        for offset, length in _coalesce(self._extents(clusters)):
            self._writer.pwrite(padded[at : at + length], offset)
            at += length

    def _plan_insert(self, d: _Dir, name: str, *, extra_clusters: int) -> _Insert:
        """Choose the names and slots for a new record in `d`, before anything is written.

        Raises bad_name, or no_space when the directory cannot grow or the `extra_clusters`
        the caller needs do not fit beside its growth.
        """
        problem = long_name_problem(name)
        if problem:
            raise self._error(f"the name {name!r} {problem}", ProblemCode.BAD_NAME)
        listing = self._listing(d)
        short = short_name_for(name, {r.short for r in listing.records})
        lfn = [] if display_short(short, 0) == name else lfn_entries(name, short)
        count = len(lfn) + 1
        start = _free_run(d.data, listing.end_slot, count)
        grow = 0
        if start is None:
            if d.cluster == 0:
                raise self._error("the root directory is full", ProblemCode.NO_SPACE)
            start = listing.end_slot
            slots_per_cluster = self._geo.cluster_size // ENTRY_SIZE
            grow = -(-(start + count - len(d.data) // ENTRY_SIZE) // slots_per_cluster)
        if grow + extra_clusters > self._fat.free_count:
            raise self._error(
                f"not enough free space: {grow + extra_clusters} clusters needed, "
                f"{self._fat.free_count} free",
                ProblemCode.NO_SPACE,
            )
        return _Insert(short, lfn, start, grow, listing.end_slot)

    def _commit_insert(
        self, d: _Dir, plan: _Insert, attr: int, cluster: int, size: int, stamp: Stamp
    ) -> None:
        if plan.grow:
            added = self._fat.allocate(plan.grow, after=self._fat.chain(d.cluster)[-1])
            blank = bytes(self._geo.cluster_size)
            for c in added:
                self._writer.pwrite(blank, self._geo.cluster_offset(c))
            d.extents += self._extents(added)
            d.data += bytes(len(added) * self._geo.cluster_size)
        entries = [*plan.lfn, short_entry(plan.short, attr, cluster, size, stamp)]
        end = plan.start + len(entries)
        # Slots past the old end marker may hold stale bytes: keep an end marker after ours.
        if plan.end_slot <= end < len(d.data) // ENTRY_SIZE and d.data[end * ENTRY_SIZE]:
            entries.append(bytes(ENTRY_SIZE))
        self._fat.flush(self._writer)
        self._put_slots(d, plan.start, entries)

    def _put_slots(self, d: _Dir, first_slot: int, entries: list[bytes]) -> None:
        blob = b"".join(entries)
        d.data[first_slot * ENTRY_SIZE : first_slot * ENTRY_SIZE + len(blob)] = blob
        slot = first_slot
        while slot < first_slot + len(entries):
            offset = d.offset_of(slot)
            run = 1
            while (
                slot + run < first_slot + len(entries)
                and d.offset_of(slot + run) == offset + run * ENTRY_SIZE
            ):
                run += 1
            at = (slot - first_slot) * ENTRY_SIZE
            self._writer.pwrite(blob[at : at + run * ENTRY_SIZE], offset)
            slot += run


@dataclass(frozen=True)
class _Insert:
    short: bytes
    lfn: list[bytes]
    start: int
    grow: int
    end_slot: int


def _free_run(data: bytearray, end_slot: int, count: int) -> int | None:
    """The first slot of `count` consecutive free slots, or None when the directory is full."""
    total = len(data) // ENTRY_SIZE
    run_start, run = 0, 0
    for slot in range(total):
        if slot >= end_slot or data[slot * ENTRY_SIZE] == DELETED:
            if run == 0:
                run_start = slot
            run += 1
            if run == count:
                return run_start
        else:
            run = 0
    return None


def _split(path: str) -> list[str]:
    return [part for part in path.replace("\\", "/").split("/") if part and part != "."]


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for offset, length in sorted(ranges):
        if out and out[-1][0] + out[-1][1] >= offset:
            prev_offset, prev_length = out[-1]
            out[-1] = (prev_offset, max(prev_length, offset + length - prev_offset))
        else:
            out.append((offset, length))
    return out
