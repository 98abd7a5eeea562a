"""The allocation map: range arithmetic, .bmap files, what each kind of partition contributes."""

from __future__ import annotations

import errno
import random
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from flasher.errors import ImageError
from flasher.image import ranges as rng
from flasher.image import sparse
from flasher.image.bmap import read_bmap, verify_bmap, write_bmap
from flasher.image.byteio import FileReader, MemoryIO, SliceIO
from flasher.image.ext4 import Ext4Filesystem
from flasher.image.partitions import read_partition_table
from flasher.image.sparse import AllocationMap, allocation_map
from tests.support.filesystems import (
    MiB,
    PartSpec,
    build_disk,
    mkfs_ext4,
    patch_bytes,
    require,
    run,
)

Disk = tuple[Path, list[tuple[int, int]]]

# -- range arithmetic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ranges", "gap", "expected"),
    [
        ([], 0, []),
        ([(10, 5), (0, 5)], 0, [(0, 5), (10, 5)]),
        ([(0, 5), (5, 5)], 0, [(0, 10)]),
        ([(0, 10), (2, 3)], 0, [(0, 10)]),
        ([(0, 5), (9, 1)], 4, [(0, 5), (9, 1)]),
        ([(0, 5), (9, 1)], 5, [(0, 10)]),
        ([(0, 0), (3, 1)], 0, [(3, 1)]),
    ],
)
def test_coalesce_joins_ranges_closer_than_the_gap(
    ranges: list[tuple[int, int]], gap: int, expected: list[tuple[int, int]]
) -> None:
    assert rng.coalesce(ranges, gap) == expected


@pytest.mark.parametrize(
    ("ranges", "block", "limit", "expected"),
    [
        ([(1, 1)], 4, 100, [(0, 4)]),
        ([(3, 2), (9, 1)], 4, 100, [(0, 12)]),
        ([(4, 4)], 4, 100, [(4, 4)]),
        ([(97, 1)], 8, 100, [(96, 4)]),  # clipped at the end of the image
    ],
)
def test_align_out_widens_to_whole_blocks(
    ranges: list[tuple[int, int]], block: int, limit: int, expected: list[tuple[int, int]]
) -> None:
    assert rng.align_out(ranges, block, limit) == expected


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        ([], [(0, 100)]),
        ([(0, 100)], []),
        ([(10, 10), (50, 60)], [(0, 10), (20, 30)]),
        ([(-5, 10)], [(5, 95)]),
    ],
)
def test_complement_is_what_the_ranges_leave_out(
    ranges: list[tuple[int, int]], expected: list[tuple[int, int]]
) -> None:
    assert rng.complement(ranges, 0, 100) == expected


@pytest.mark.parametrize("seed", range(5))
def test_set_bit_runs_match_a_bit_by_bit_scan(seed: int) -> None:
    r = random.Random(seed)
    bitmap = bytes(r.choice([0, 0, 0xFF, 0xFF, r.getrandbits(8)]) for _ in range(512))
    count = 512 * 8 - r.randrange(16)
    bits = [(bitmap[i // 8] >> (i % 8)) & 1 for i in range(count)]
    naive = rng.merge((i, 1) for i, bit in enumerate(bits) if bit)
    assert list(rng.set_bit_runs(bitmap, count)) == naive


# -- the map value -----------------------------------------------------------------------------

MAP = AllocationMap(100, ((0, 10), (40, 25)))


@pytest.mark.parametrize(
    ("offset", "inside"),
    [(0, True), (9, True), (10, False), (39, False), (40, True), (64, True), (65, False)],
)
def test_contains_answers_per_byte(offset: int, inside: bool) -> None:
    assert MAP.contains(offset) is inside


def test_iter_ranges_cuts_long_ranges() -> None:
    assert list(MAP.iter_ranges(10)) == [(0, 10), (40, 10), (50, 10), (60, 5)]


def test_mapped_bytes_is_the_sum_of_ranges() -> None:
    assert (MAP.mapped_bytes, MAP.mapped_fraction) == (35, 0.35)


def test_including_adds_overlay_ranges() -> None:
    assert MAP.including([(5, 10), (99, 5)]).ranges == ((0, 15), (40, 25), (99, 1))


def test_aligned_and_coalesced_return_new_maps() -> None:
    assert MAP.aligned(8).ranges == ((0, 16), (40, 32))
    assert MAP.coalesced(31).ranges == ((0, 65),)
    assert MAP.ranges == ((0, 10), (40, 25))


# -- .bmap files -------------------------------------------------------------------------------


def test_written_bmap_reads_back(tmp_path: Path) -> None:
    image = MemoryIO(10 * 4096 + 100)
    image.pwrite(b"x" * 5000, 4096)
    path = write_bmap(tmp_path / "a.bmap", [(4096, 5000), (40960, 100)], image.size, image=image)
    bmap = read_bmap(path)
    assert (bmap.image_size, bmap.block_size, bmap.blocks_count, bmap.mapped_blocks_count) == (
        image.size,
        4096,
        11,
        3,
    )
    assert bmap.byte_ranges() == [(4096, 8192), (40960, 100)]
    verify_bmap(image, bmap, name="image")


def test_bmap_range_checksum_mismatch_is_reported(tmp_path: Path) -> None:
    image = MemoryIO(3 * 4096)
    path = write_bmap(tmp_path / "a.bmap", [(0, 4096)], image.size, image=image)
    image.pwrite(b"changed", 10)
    with pytest.raises(ImageError) as info:
        verify_bmap(image, read_bmap(path), name="image")
    assert info.value.problem == "bmap_mismatch"


def test_the_first_range_that_does_not_match_is_named(tmp_path: Path) -> None:
    # Ranges are hashed on several threads; the error still names the first in image order.
    image = MemoryIO(12 * 4096)
    for block in range(12):
        image.pwrite(bytes([block + 1]) * 4096, block * 4096)
    spans = [(block * 4096, 4096) for block in range(0, 12, 2)]
    path = write_bmap(tmp_path / "a.bmap", spans, image.size, image=image)
    verify_bmap(image, read_bmap(path), name="image")
    image.pwrite(b"changed", 10 * 4096 + 5)
    image.pwrite(b"changed", 4 * 4096 + 5)
    with pytest.raises(ImageError) as info:
        verify_bmap(image, read_bmap(path), name="image")
    assert "blocks 4-4 do not match" in str(info.value)


def test_bmaptool_bmap_is_read(tmp_path: Path) -> None:
    require("bmaptool")
    image = tmp_path / "sparse.img"
    with open(image, "wb") as f:
        f.truncate(8 * MiB)
        f.seek(MiB)
        f.write(b"\x01" * 10000)
    run(["bmaptool", "create", "-o", tmp_path / "x.bmap", image])
    bmap = read_bmap(tmp_path / "x.bmap")
    assert (bmap.version, bmap.checksum_type, bmap.image_size) == ("2.0", "sha256", 8 * MiB)
    assert bmap.byte_ranges() == [(MiB, 12288)]
    with FileReader(image) as io:
        verify_bmap(io, bmap, name="image")


def bmap_text(tmp_path: Path) -> str:
    path = write_bmap(tmp_path / "a.bmap", [(0, 4096)], 8192)
    return path.read_text()


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace("<bmap", '<!DOCTYPE bmap [<!ENTITY a "b">]>\n<bmap', 1),
        lambda t: t.replace("0-0", "0-5"),  # past the last block, checksum now wrong too
        lambda t: re.sub(r"<BmapFileChecksum> \w+", "<BmapFileChecksum> " + "1" * 64, t),
        lambda t: t.replace('version="2.0"', 'version="3.0"'),
        lambda t: t.replace("<ImageSize> 8192", "<ImageSize> 99999"),
        lambda t: t[: len(t) // 2],
    ],
    ids=["dtd", "range", "file-checksum", "version", "size", "truncated"],
)
def test_bad_bmap_is_refused(edit: Callable[[str], str], tmp_path: Path) -> None:
    path = tmp_path / "bad.bmap"
    path.write_text(edit(bmap_text(tmp_path)))
    with pytest.raises(ImageError) as info:
        read_bmap(path)
    assert info.value.problem == "bad_bmap"


def test_bmap_v1_without_checksums_is_read(tmp_path: Path) -> None:
    path = tmp_path / "old.bmap"
    path.write_text(
        '<?xml version="1.0" ?><bmap version="1.2"><ImageSize> 10000 </ImageSize>'
        "<BlockSize> 4096 </BlockSize><BlocksCount> 3 </BlocksCount>"
        "<MappedBlocksCount> 2 </MappedBlocksCount><BlockMap><Range> 0 </Range>"
        "<Range> 2 </Range></BlockMap></bmap>"
    )
    bmap = read_bmap(path)
    assert bmap.checksum_type is None
    assert bmap.byte_ranges() == [(0, 4096), (8192, 1808)]


# -- allocation_map over real partitions ---------------------------------------------------------


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    """MBR: FAT16 p1, ext4 p2, random bytes p3, extended p4 holding a corrupt ext4 (p5)."""
    directory = tmp_path_factory.mktemp("disk")
    path, parts = build_disk(
        directory,
        "mbr",
        [
            PartSpec("fat16", 16 * MiB, tree_bytes=2 * MiB),
            PartSpec("ext4", 24 * MiB, tree_bytes=3 * MiB),
            PartSpec("raw", 2 * MiB),
            PartSpec("extended", 0),
            PartSpec("ext4", 8 * MiB, tree_bytes=1 * MiB),
        ],
        gap_bytes=1 * MiB,
    )
    p5 = next(p for p in parts if p.number == 5)
    patch_bytes(path, p5.start_bytes + 1024 + 0x78, b"tampered label")  # breaks its checksum
    return path, [(p.start_bytes, p.size_bytes) for p in parts]


def exact_map(path: Path, *, bmap_path: Path | None = None, verify: bool = False) -> AllocationMap:
    """The map without gap filling or block alignment."""
    with FileReader(path) as io:
        table = read_partition_table(io, name=str(path))
        return allocation_map(
            io,
            table,
            bmap_path=bmap_path,
            verify_bmap_checksums=verify,
            coalesce_gap_bytes=0,
            block_bytes=1,
        )


class _Reader:
    """A FileReader that names the threads that read each partition, and fails on demand."""

    def __init__(self, io: FileReader, failing: tuple[int, int] | None = None) -> None:
        self.io = io
        self.size = io.size
        self.failing = failing
        self.threads: set[str] = set()

    def pread(self, length: int, offset: int) -> bytes:
        self.threads.add(threading.current_thread().name)
        if self.failing and self.failing[0] <= offset < self.failing[0] + self.failing[1]:
            raise OSError(errno.EIO, "Input/output error")
        return self.io.pread(length, offset)


def test_partitions_are_mapped_side_by_side_as_one_at_a_time_would(
    disk: Disk, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _parts = disk
    with FileReader(path) as io:
        table = read_partition_table(io, name=str(path))
        reader = _Reader(io)
        together = allocation_map(reader, table)
        monkeypatch.setattr(
            sparse,
            "_side_by_side",
            lambda io, parts: [
                (*sparse._analyse(io, p)[:2], sparse._journal_scrub(io, p)) for p in parts
            ],
        )
        sequential = sparse.allocation_map(io, table)
    assert together == sequential
    assert "flasher-map" in reader.threads


def test_a_read_error_in_one_partition_reaches_the_caller(disk: Disk) -> None:
    path, parts = disk
    with FileReader(path) as io:
        table = read_partition_table(io, name=str(path))
        with pytest.raises(OSError, match="Input/output error"):
            allocation_map(_Reader(io, failing=parts[1]), table)


def test_area_before_first_partition_is_mapped_and_a_zero_gap_is_not(disk: Disk) -> None:
    # More on the areas outside the partitions in tests/unit/test_sparse_gaps.py.
    path, parts = disk
    amap = exact_map(path)
    (p1_start, p1_size), (p2_start, _) = parts[0], parts[1]
    assert rng.complement(amap.ranges, 0, p1_start) == []
    assert rng.clip(amap.ranges, p1_start + p1_size, p2_start) == []


def test_unknown_partition_is_mapped_whole(disk: Disk) -> None:
    path, parts = disk
    amap = exact_map(path)
    start, size = parts[2]
    assert rng.complement(amap.ranges, start, start + size) == []
    p3 = next(p for p in amap.partitions if p.number == 3)
    assert (p3.method, p3.filesystem, p3.mapped_bytes) == ("whole", "unknown", size)


def test_corrupt_filesystem_is_mapped_whole_with_a_warning(disk: Disk) -> None:
    path, parts = disk
    amap = exact_map(path)
    start, size = parts[4]
    assert rng.complement(amap.ranges, start, start + size) == []
    assert len(amap.warnings) == 1
    assert amap.warnings[0].startswith("partition 5: ") and "checksum" in amap.warnings[0]


def test_free_space_of_known_filesystems_is_left_out(disk: Disk) -> None:
    path, parts = disk
    amap = exact_map(path)
    by_number = {p.number: p for p in amap.partitions}
    assert by_number[1].method == "fat" and by_number[2].method == "ext4"
    for number, (start, size) in ((1, parts[0]), (2, parts[1])):
        inside = rng.total(rng.clip(amap.ranges, start, start + size))
        assert inside == by_number[number].mapped_bytes < size / 2


def test_ext4_partition_is_mapped_as_its_bitmaps_say(disk: Disk) -> None:
    path, parts = disk
    start, size = parts[1]
    with FileReader(path) as io:
        used = Ext4Filesystem(SliceIO(io, start, size)).allocated_ranges()
    amap = exact_map(path)
    inside = rng.clip(amap.ranges, start, start + size)
    # Less the zero journal blocks, which are scrubbed instead (tests/unit/test_journal_map.py).
    expected = rng.subtract([(start + offset, length) for offset, length in used], amap.scrub)
    assert inside == expected


def test_extended_boot_records_are_mapped(disk: Disk) -> None:
    path, _ = disk
    amap = exact_map(path)
    with FileReader(path) as io:
        table = read_partition_table(io, name=str(path))
    assert len(table.metadata_ranges) == 2  # MBR + one EBR
    assert all(amap.contains(offset) for offset, _ in table.metadata_ranges)


def test_default_map_covers_the_exact_map(disk: Disk) -> None:
    path, _ = disk
    exact = exact_map(path)
    with FileReader(path) as io:
        default = allocation_map(io, read_partition_table(io, name="disk"))
    assert rng.merge([*default.ranges, *exact.ranges]) == list(default.ranges)
    assert all(offset % 4096 == 0 for offset, _ in default.ranges)
    assert default.mapped_bytes > exact.mapped_bytes


def test_bmap_replaces_filesystem_analysis(disk: Disk, tmp_path: Path) -> None:
    path, parts = disk
    size = path.stat().st_size
    bmap = write_bmap(tmp_path / "x.bmap", [(0, 4096), (8 * MiB, 8192)], size)
    amap = exact_map(path, bmap_path=bmap)
    # The area before the first partition and the partition table structures are always kept.
    # The EBR's whole 4 KiB block: past the first partition, blocks holding data are mapped.
    head, ebr = (0, parts[0][0]), (parts[3][0], 4096)
    assert amap.source == "bmap"
    assert amap.ranges == (head, (8 * MiB, 8192), ebr)
    assert amap.warnings == ()


def test_bmap_for_another_size_is_refused(disk: Disk, tmp_path: Path) -> None:
    path, _ = disk
    bmap = write_bmap(tmp_path / "x.bmap", [(0, 4096)], path.stat().st_size + 4096)
    with pytest.raises(ImageError) as info:
        exact_map(path, bmap_path=bmap)
    assert info.value.problem == "bmap_mismatch"


def test_bmap_checksums_are_not_read_by_default(disk: Disk, tmp_path: Path) -> None:
    path, _ = disk
    size = path.stat().st_size
    other = MemoryIO(size)  # same size, other content: every range checksum is wrong
    bmap = write_bmap(tmp_path / "x.bmap", [(0, 2 * MiB)], size, image=other)
    assert exact_map(path, bmap_path=bmap).ranges[0] == (0, 2 * MiB)


def test_bmap_checksum_mismatch_is_refused_on_request(disk: Disk, tmp_path: Path) -> None:
    path, _ = disk
    size = path.stat().st_size
    bmap = write_bmap(tmp_path / "x.bmap", [(0, 2 * MiB)], size, image=MemoryIO(size))
    with pytest.raises(ImageError) as info:
        exact_map(path, bmap_path=bmap, verify=True)
    assert info.value.problem == "bmap_mismatch"


def test_bmap_checksums_of_this_image_pass(disk: Disk, tmp_path: Path) -> None:
    path, _ = disk
    size = path.stat().st_size
    with FileReader(path) as io:
        bmap = write_bmap(tmp_path / "x.bmap", [(0, 2 * MiB)], size, image=io)
    assert exact_map(path, bmap_path=bmap, verify=True).source == "bmap"


def test_image_without_partition_table_is_mapped_as_one_filesystem(tmp_path: Path) -> None:
    path = tmp_path / "bare.img"
    mkfs_ext4(path, 16 * MiB, (), None)
    amap = exact_map(path)
    with FileReader(path) as io:
        used = Ext4Filesystem(io).allocated_ranges()
    assert amap.scrub  # the zero journal body, scrubbed instead of written
    assert list(amap.ranges) == rng.subtract(used, amap.scrub)
    assert [p.method for p in amap.partitions] == ["ext4"]


def test_map_describes_itself_as_json(disk: Disk) -> None:
    path, _ = disk
    info = exact_map(path).to_dict()
    assert set(info) == {
        "size_bytes",
        "mapped_bytes",
        "scrub_bytes",
        "range_count",
        "source",
        "partitions",
        "outside",
        "warnings",
    }
    assert [p["number"] for p in info["partitions"]] == [1, 2, 3, 5]
