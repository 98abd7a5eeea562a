"""FAT geometry (the BIOS parameter block) and the allocation table itself, held in memory.

Every FAT copy is kept identical: a change is written as the few table sectors it touched, to
each copy. Imports only the standard library and flasher's errors and byteio modules.
"""

from __future__ import annotations

import itertools
import struct
import sys
from array import array
from dataclasses import dataclass

from flasher.error_codes import ProblemCode
from flasher.errors import ImageError
from flasher.image.byteio import ReadAt, WriteAt

FAT12_MAX_CLUSTERS = 4084
FAT16_MAX_CLUSTERS = 65524
FAT32_MASK = 0x0FFFFFFF
FSINFO_LEAD = 0x41615252
FSINFO_STRUCT = 0x61417272
FSINFO_UNKNOWN = 0xFFFFFFFF
BPB = struct.Struct("<3s8sHBHBHHBHHHII")
FAT32_EXT = struct.Struct("<IHHIHH")


@dataclass(frozen=True)
class Geometry:
    """Where everything lives in a FAT filesystem, from its boot sector. Offsets in bytes."""

    bits: int
    sector_size: int
    sectors_per_cluster: int
    reserved_sectors: int
    fat_count: int
    fat_sectors: int
    root_entries: int
    total_sectors: int
    cluster_count: int
    root_cluster: int
    fsinfo_sector: int
    active_fat: int
    bpb_label: str

    @property
    def cluster_size(self) -> int:
        return self.sector_size * self.sectors_per_cluster

    @property
    def fat_offset(self) -> int:
        return self.reserved_sectors * self.sector_size

    @property
    def fat_bytes(self) -> int:
        return self.fat_sectors * self.sector_size

    @property
    def root_offset(self) -> int:
        return self.fat_offset + self.fat_count * self.fat_bytes

    @property
    def root_bytes(self) -> int:
        return self.root_entries * 32

    @property
    def data_offset(self) -> int:
        sectors = -(-self.root_bytes // self.sector_size)
        return self.root_offset + sectors * self.sector_size

    @property
    def max_cluster(self) -> int:
        return self.cluster_count + 1

    def cluster_offset(self, cluster: int) -> int:
        return self.data_offset + (cluster - 2) * self.cluster_size


def parse_boot_sector(boot: bytes) -> Geometry | str:
    """The geometry in a FAT boot sector, or a sentence saying why it is not one."""
    if len(boot) < 512:
        return "the boot sector is truncated"
    (
        jump,
        _oem,
        bps,
        spc,
        reserved,
        nfats,
        root_entries,
        total16,
        media,
        fatsz16,
        _spt,
        _heads,
        _hidden,
        total32,
    ) = BPB.unpack_from(boot)
    if jump[0] not in (0xEB, 0xE9):
        return "no x86 jump instruction at the start of the boot sector"
    if bps not in (512, 1024, 2048, 4096):
        return f"{bps} bytes per sector is not valid"
    if spc == 0 or spc & (spc - 1) or spc > 128:
        return f"{spc} sectors per cluster is not a power of two up to 128"
    if reserved == 0 or nfats == 0 or media < 0xF0:
        return "reserved sectors, FAT count or media byte is zero or invalid"
    fatsz32, ext_flags, _ver, root_cluster, fsinfo, _backup = FAT32_EXT.unpack_from(boot, 36)
    is32 = fatsz16 == 0
    fat_sectors = fatsz32 if is32 else fatsz16
    total = total16 or total32
    root_sectors = -(-root_entries * 32 // bps)
    data_sectors = total - reserved - nfats * fat_sectors - root_sectors
    if fat_sectors == 0 or data_sectors <= 0:
        return "the FAT size or total sector count is zero or too small"
    clusters = data_sectors // spc
    if is32:
        if root_entries or root_cluster < 2 or root_cluster > clusters + 1:
            return "the FAT32 root directory cluster is invalid"
        bits, label_at = 32, 0x47
    else:
        bits, label_at = (12 if clusters <= FAT12_MAX_CLUSTERS else 16), 0x2B
        if clusters > FAT16_MAX_CLUSTERS:
            return f"{clusters} clusters is too many for FAT16"
        if root_entries == 0:
            return "the root directory has no entries"
    if (clusters + 2) * bits > fat_sectors * bps * 8:
        return "the FAT is too small for the number of clusters"
    label = ""
    if boot[label_at - 5] == 0x29:
        label = boot[label_at : label_at + 11].decode("cp437").rstrip(" ")
    mirrored = not is32 or not ext_flags & 0x80
    return Geometry(
        bits,
        bps,
        spc,
        reserved,
        nfats,
        fat_sectors,
        root_entries,
        total,
        clusters,
        root_cluster if is32 else 0,
        fsinfo if is32 else 0,
        0 if mirrored else min(ext_flags & 0x0F, nfats - 1),
        "" if label == "NO NAME" else label,
    )


class Fat:
    """The active FAT as decoded entries plus its raw bytes, with the sectors changed so far."""

    def __init__(self, io: ReadAt, geo: Geometry, name: str) -> None:
        self._io = io
        self._geo = geo
        self._name = name
        start = geo.fat_offset + geo.active_fat * geo.fat_bytes
        self._raw = bytearray(io.pread(geo.fat_bytes, start))
        self._dirty: set[int] = set()
        self._synced = False
        self.last_allocated = 0
        self.eoc = {12: 0xFFF, 16: 0xFFFF, 32: FAT32_MASK}[geo.bits]
        self._bad = self.eoc - 8
        count = geo.max_cluster + 1
        if geo.bits == 12:
            self._values = array("I", (self._decode12(c) for c in range(count)))
        else:
            values = array("H" if geo.bits == 16 else "I")
            values.frombytes(bytes(self._raw[: count * geo.bits // 8]))
            if sys.byteorder == "big":
                values.byteswap()
            self._values = array("I", values)
            if geo.bits == 32 and max(self._values) > FAT32_MASK:
                self._values = array("I", (v & FAT32_MASK for v in self._values))
        self.free_count = self._values[2:].count(0)

    def _decode12(self, cluster: int) -> int:
        at = cluster + cluster // 2
        pair = self._raw[at] | (self._raw[at + 1] << 8)
        return pair >> 4 if cluster & 1 else pair & 0xFFF

    def _bad_fs(self, message: str) -> ImageError:
        return ImageError(
            self._name,
            message,
            problem=ProblemCode.BAD_FILESYSTEM,
            hint="Run fsck.fat on the image, or download it again.",
        )

    def get(self, cluster: int) -> int:
        return self._values[cluster]

    def is_allocated(self, cluster: int) -> bool:
        value = self._values[cluster]
        return value != 0 and value != self._bad

    def set(self, cluster: int, value: int) -> None:
        old = self._values[cluster]
        if (old == 0) != (value == 0):
            self.free_count += 1 if value == 0 else -1
        self._values[cluster] = value
        bits = self._geo.bits
        if bits == 12:
            at = cluster + cluster // 2
            pair = self._raw[at] | (self._raw[at + 1] << 8)
            pair = (pair & 0x000F) | (value << 4) if cluster & 1 else (pair & 0xF000) | value
            self._raw[at : at + 2] = pair.to_bytes(2, "little")
            span = (at, at + 2)
        elif bits == 16:
            at = cluster * 2
            self._raw[at : at + 2] = value.to_bytes(2, "little")
            span = (at, at + 2)
        else:
            at = cluster * 4
            top = int.from_bytes(self._raw[at : at + 4], "little") & ~FAT32_MASK
            self._raw[at : at + 4] = (top | value).to_bytes(4, "little")
            span = (at, at + 4)
        ss = self._geo.sector_size
        self._dirty.update(range(span[0] // ss, (span[1] - 1) // ss + 1))

    def chain(self, first: int) -> list[int]:
        """The clusters of the chain starting at `first`; cycles and bad links raise."""
        out: list[int] = []
        cluster = first
        while True:
            if not 2 <= cluster <= self._geo.max_cluster:
                raise self._bad_fs(f"cluster chain from {first} reaches invalid cluster {cluster}")
            out.append(cluster)
            if len(out) > self._geo.cluster_count:
                raise self._bad_fs(f"cluster chain from {first} loops")
            nxt = self._values[cluster]
            if nxt > self._bad:
                return out
            if nxt == 0 or nxt == self._bad:
                raise self._bad_fs(
                    f"cluster chain from {first} runs into a free or bad cluster "
                    f"({cluster} -> {nxt})"
                )
            cluster = nxt

    def allocate(self, count: int, *, after: int = 0) -> list[int]:
        """Take the first `count` free clusters from cluster 2 up, chain them, end with EOC.

        When `after` is a cluster, the new run is linked after it.
        """
        if count > self.free_count:
            raise ImageError(
                self._name,
                f"not enough free space: {count} clusters needed, {self.free_count} free",
                problem=ProblemCode.NO_SPACE,
                hint="Remove files from the boot partition or use smaller files.",
            )
        taken: list[int] = []
        cluster = 2
        while len(taken) < count:
            cluster = self._values.index(0, cluster, self._geo.max_cluster + 1)
            taken.append(cluster)
            cluster += 1
        for a, b in itertools.pairwise(taken):
            self.set(a, b)
        if taken:
            self.set(taken[-1], self.eoc)
            if after:
                self.set(after, taken[0])
            self.last_allocated = taken[-1]
        return taken

    def free(self, clusters: list[int]) -> None:
        for cluster in clusters:
            self.set(cluster, 0)

    def allocated_runs(self) -> list[tuple[int, int]]:
        """(first cluster, count) of every run of allocated clusters, in cluster order."""
        values, bad, end = self._values, self._bad, self._geo.max_cluster + 1
        runs: list[tuple[int, int]] = []
        start = 0
        for cluster in range(2, end):
            value = values[cluster]
            if value != 0 and value != bad:
                if not start:
                    start = cluster
            elif start:
                runs.append((start, cluster - start))
                start = 0
        if start:
            runs.append((start, end - start))
        return runs

    def flush(self, io: WriteAt) -> None:
        """Write the changed table sectors to every FAT copy, and FSInfo on FAT32.

        On the first flush, sectors where another copy differs from the active one are
        rewritten too, so a table left unsynchronised by another tool is repaired.
        """
        geo = self._geo
        ss = geo.sector_size
        if not self._synced:
            self._synced = True
            for copy in range(geo.fat_count):
                other = io.pread(geo.fat_bytes, geo.fat_offset + copy * geo.fat_bytes)
                for s in range(geo.fat_sectors):
                    if other[s * ss : (s + 1) * ss] != self._raw[s * ss : (s + 1) * ss]:
                        self._dirty.add(s)
        for first, last in _runs(sorted(self._dirty)):
            data = bytes(self._raw[first * ss : (last + 1) * ss])
            for copy in range(geo.fat_count):
                io.pwrite(data, geo.fat_offset + copy * geo.fat_bytes + first * ss)
        self._dirty.clear()
        if geo.bits == 32 and 0 < geo.fsinfo_sector < geo.reserved_sectors:
            at = geo.fsinfo_sector * ss
            info = io.pread(512, at)
            (lead,) = struct.unpack_from("<I", info, 0)
            sig, free, hint = struct.unpack_from("<III", info, 484)
            if lead == FSINFO_LEAD and sig == FSINFO_STRUCT:
                new_hint = self.last_allocated or hint
                if (free, hint) != (self.free_count, new_hint):
                    io.pwrite(struct.pack("<II", self.free_count, new_hint), at + 488)


def _runs(sectors: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for s in sectors:
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs
