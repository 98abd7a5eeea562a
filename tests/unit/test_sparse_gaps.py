"""The allocation map outside the partitions: the area before the first partition and the
partition table structures mapped whole, the gaps past it only where they hold data; with and
without a .bmap, on real MBR (logical partitions) and GPT disks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flasher.image import ranges as rng
from flasher.image.bmap import write_bmap
from flasher.image.byteio import FileReader
from flasher.image.partitions import PartitionTable, read_partition_table
from flasher.image.sparse import GAP_READ_BYTES, AllocationMap, OutsideAllocation, allocation_map
from tests.support.filesystems import (
    MiB,
    PartSpec,
    build_disk,
    mkfs_ext4,
    nonzero_blocks,
    patch_bytes,
)
from tests.support.recording import Recording

BLOCK = 4096
SPECS = [
    PartSpec("fat16", 16 * MiB, tree_bytes=1 * MiB),
    PartSpec("ext4", 16 * MiB, tree_bytes=1 * MiB),
    PartSpec("extended", 0),
    PartSpec("ext4", 8 * MiB),
    PartSpec("ext4", 8 * MiB, tree_bytes=1 * MiB),
]


@pytest.fixture(scope="module", params=["mbr", "gpt"])
def disk(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Partitions 3 MiB apart after a 2 MiB head; MBR with two logical partitions."""
    scheme = request.param
    specs = [s for s in SPECS if scheme == "mbr" or s.kind != "extended"]
    directory = tmp_path_factory.mktemp(scheme)
    path, _ = build_disk(directory, scheme, specs, first_offset=2 * MiB, gap_bytes=3 * MiB)
    return path


def table_of(path: Path) -> PartitionTable:
    with FileReader(path) as io:
        return read_partition_table(io, name=str(path))


def exact_map(path: Path, *, bmap_path: Path | None = None) -> AllocationMap:
    with FileReader(path) as io:
        return allocation_map(
            io, table_of(path), bmap_path=bmap_path, coalesce_gap_bytes=0, block_bytes=1
        )


def gaps(table: PartitionTable) -> list[tuple[int, int]]:
    """The areas outside every data partition past the first one's start."""
    parts = [(p.start_bytes, p.size_bytes) for p in table.data_partitions()]
    return rng.complement(parts, min(p[0] for p in parts), table.disk_size)


def with_bytes(disk: Path, tmp_path: Path, writes: list[tuple[int, bytes]]) -> Path:
    copy = tmp_path / disk.name
    shutil.copyfile(disk, copy)
    for offset, data in writes:
        patch_bytes(copy, offset, data)
    return copy


def outside_gaps(amap: AllocationMap, table: PartitionTable) -> list[tuple[int, int]]:
    """What the map holds of the gaps."""
    return [r for start, n in gaps(table) for r in rng.clip(amap.ranges, start, start + n)]


def expected_in_gaps(image: Path, table: PartitionTable) -> list[tuple[int, int]]:
    """The rule, computed apart: in the gaps, the partition table structures and every 4 KiB
    block holding a non-zero byte."""
    wanted = rng.merge([*table.metadata_ranges, *nonzero_blocks(image, BLOCK)])
    return [r for start, n in gaps(table) for r in rng.clip(wanted, start, start + n)]


def first_start(table: PartitionTable) -> int:
    return min(p.start_bytes for p in table.data_partitions())


def test_zero_gaps_are_left_out_but_for_the_partition_table(disk: Path) -> None:
    table = table_of(disk)
    amap = exact_map(disk)
    in_gaps = outside_gaps(amap, table)
    assert rng.total(gaps(table)) > 10 * MiB
    assert in_gaps == expected_in_gaps(disk, table)
    assert rng.total(in_gaps) <= 5 * BLOCK  # the EBRs, or the backup GPT
    # The default map (gaps filled, whole blocks) leaves them out too.
    with FileReader(disk) as io:
        default = allocation_map(io, table)
    assert rng.total(outside_gaps(default, table)) <= rng.total(gaps(table)) - 8 * MiB


def test_gpt_backup_and_extended_boot_records_stay_mapped(disk: Path) -> None:
    table = table_of(disk)
    amap = exact_map(disk)
    tail = [(off, n) for off, n in table.metadata_ranges if off >= first_start(table)]
    if table.scheme == "gpt":
        # The backup array and header: the last 33 sectors of the disk.
        assert rng.merge(tail) == [(table.disk_size - 33 * 512, 33 * 512)]
    else:
        assert len(tail) == 2  # one EBR per logical partition
    assert rng.merge([*amap.ranges, *tail]) == list(amap.ranges)


def test_partition_table_structures_are_mapped_even_when_zero(disk: Path, tmp_path: Path) -> None:
    # Zero every table structure past the first partition: the map still holds them (and
    # only them: the blocks around them hold no data any more).
    table = table_of(disk)
    tail = [r for r in table.metadata_ranges if r[0] >= first_start(table)]
    image = with_bytes(disk, tmp_path, [(off, bytes(n)) for off, n in tail])
    with FileReader(image) as io:
        amap = allocation_map(io, table, coalesce_gap_bytes=0, block_bytes=1)
    assert outside_gaps(amap, table) == rng.merge(tail)


def test_area_before_the_first_partition_is_mapped_whole_though_zero(disk: Path) -> None:
    table = table_of(disk)
    first = first_start(table)
    data_there = rng.clip(nonzero_blocks(disk, 512), 0, first)
    assert rng.total(data_there) < first // 4  # mostly zeros: mapped anyway
    assert rng.complement(exact_map(disk).ranges, 0, first) == []


def test_a_whole_disk_filesystem_has_nothing_outside(tmp_path: Path) -> None:
    path = tmp_path / "bare.img"
    mkfs_ext4(path, 16 * MiB, (), None)
    amap = exact_map(path)
    assert amap.outside == OutsideAllocation(0, 0, 0)
    assert amap.mapped_bytes == amap.partitions[0].mapped_bytes < 4 * MiB


def writes_at(table: PartitionTable) -> list[tuple[int, bytes]]:
    """Bytes to put in the gaps: in the first one, in the second (across a block boundary and
    right before a partition), and past the last partition."""
    (g1, _), (g2, n2) = gaps(table)[:2]
    last = gaps(table)[-1][0]
    return [
        (g1 + 3 * BLOCK + 100, b"\x01"),
        (g2 + 5 * BLOCK - 2, b"spans two blocks"),
        (g2 + n2 - 3, b"end"),
        (last + 7 * BLOCK, b"\xff" * BLOCK),
    ]


@pytest.mark.parametrize("with_bmap", [False, True], ids=["filesystems", "bmap"])
def test_data_in_a_gap_is_mapped_exactly_at_its_blocks(
    disk: Path, with_bmap: bool, tmp_path: Path
) -> None:
    table = table_of(disk)
    writes = writes_at(table)
    image = with_bytes(disk, tmp_path, writes)
    (g1, _), (g2, n2) = gaps(table)[:2]
    last_start, last_length = gaps(table)[-1]
    assert last_length > 8 * BLOCK and writes[-1][0] + BLOCK <= table.disk_size - 33 * 512
    bmap = None
    if with_bmap:
        # A .bmap mapping the gaps' zeros and none of the data put there: outside the
        # partitions the image's own bytes decide, as without one.
        size = image.stat().st_size
        data_blocks = rng.align_out([(off, len(b)) for off, b in writes], BLOCK, size)
        bmap = write_bmap(tmp_path / "x.bmap", rng.subtract(gaps(table), data_blocks), size)
    amap = exact_map(image, bmap_path=bmap)
    expected = [
        (g1 + 3 * BLOCK, BLOCK),
        (g2 + 4 * BLOCK, 2 * BLOCK),
        (g2 + n2 - BLOCK, BLOCK),
        (last_start + 7 * BLOCK, BLOCK),
        *expected_in_gaps(disk, table),  # the partition table's blocks
    ]
    assert outside_gaps(amap, table) == rng.merge(expected) == expected_in_gaps(image, table)
    assert amap.source == ("bmap" if with_bmap else "filesystems")


def test_the_breakdown_accounts_for_the_area_outside_the_partitions(
    disk: Path, tmp_path: Path
) -> None:
    table = table_of(disk)
    image = with_bytes(disk, tmp_path, writes_at(table))
    amap = exact_map(image)
    first = first_start(table)
    parts = [(p.start_bytes, p.size_bytes) for p in table.data_partitions()]
    outside = rng.complement(parts, 0, table.disk_size)
    mapped_outside = first + rng.total(expected_in_gaps(image, table))
    assert amap.outside == OutsideAllocation(rng.total(outside), first, mapped_outside)
    assert mapped_outside == sum(rng.total(rng.clip(amap.ranges, o, o + n)) for o, n in outside)
    inside = sum(p.mapped_bytes for p in amap.partitions)
    assert amap.mapped_bytes == inside + mapped_outside
    assert amap.to_dict()["outside"] == {
        "size_bytes": rng.total(outside),
        "head_bytes": first,
        "mapped_bytes": mapped_outside,
    }


def test_gaps_are_read_in_pieces_of_at_most_a_mebibyte(disk: Path) -> None:
    table = table_of(disk)
    with FileReader(disk) as io:
        recording = Recording(io)
        allocation_map(recording, table)
    in_gaps = [r for r in recording.reads for g in gaps(table) if g[0] <= r[0] < g[0] + g[1]]
    assert max(n for _, n in in_gaps) == GAP_READ_BYTES
    assert rng.merge(in_gaps) == rng.merge(gaps(table))


def test_gap_bytes_that_cannot_be_read_are_mapped(disk: Path) -> None:
    table = table_of(disk)
    start, length = gaps(table)[0]
    with FileReader(disk) as io:
        amap = allocation_map(Recording(io, end_at=start + 2 * BLOCK), table, coalesce_gap_bytes=0)
    # From the first byte not given to the end of that gap.
    assert rng.clip(amap.ranges, start, start + length) == [(start + 2 * BLOCK, length - 2 * BLOCK)]
