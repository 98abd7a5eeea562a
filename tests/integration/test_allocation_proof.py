"""Proof that the allocation map is safe: garbage in every unmapped byte changes nothing.

For each disk (MBR and GPT; FAT12/16/32; ext2/3/4 in several layouts) the map is computed, a copy
gets pseudo-random garbage in every byte the map leaves out, and then every filesystem on the
copy must check clean (e2fsck -fn, fsck.fat -n) and give back every file byte for byte (debugfs
rdump, mcopy -s), and the partition table must read back the same (sfdisk -d). The unmapped
bytes include the unused, zeroed tails of ext4 inode tables, so the garbage lands there too;
inode tables that cannot be trusted that way (no descriptor checksums, not flagged zeroed) must
stay mapped whole. The map must also cover every block that holds data and every block bmaptool
maps with data, and bmaptool must accept the .bmap we write for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from flasher.image import ranges as rng
from flasher.image.bmap import read_bmap, write_bmap
from flasher.image.byteio import FileReader, SliceIO
from flasher.image.ext4 import BG_INODE_ZEROED, Ext4Filesystem
from flasher.image.partitions import read_partition_table
from flasher.image.sparse import AllocationMap, allocation_map
from tests.support.filesystems import (
    DiskPart,
    MiB,
    PartSpec,
    build_disk,
    expected_tree,
    extract,
    garbage_copy,
    nonzero_blocks,
    partition_readback,
    require,
    run,
    sfdisk_dump,
)
from tests.support.images import BuiltImage

DISKS: dict[str, tuple[str, list[PartSpec]]] = {
    "mbr-fat16-ext4-logicals": (
        "mbr",
        [
            PartSpec("fat16", 16 * MiB, tree_bytes=3 * MiB),
            PartSpec("ext4", 40 * MiB, ("-b", "4096"), tree_bytes=6 * MiB),
            PartSpec("raw", 1 * MiB),
            PartSpec("extended", 0),
            PartSpec("ext4", 24 * MiB, ("-b", "1024", "-O", "^flex_bg"), tree_bytes=4 * MiB),
            PartSpec("ext4", 12 * MiB, ("-O", "^metadata_csum,uninit_bg"), tree_bytes=2 * MiB),
            # Inode tables left for the kernel to zero: none is flagged ITABLE_ZEROED.
            PartSpec(
                "ext4",
                12 * MiB,
                ("-E", "root_owner=0:0,lazy_itable_init=1,nodiscard"),
                tree_bytes=2 * MiB,
            ),
        ],
    ),
    "gpt-fat32-ext2-ext3-meta-bg": (
        "gpt",
        [
            PartSpec("fat32", 36 * MiB, ("-s", "1"), tree_bytes=5 * MiB),
            PartSpec("ext4", 24 * MiB, ("-t", "ext2"), tree_bytes=3 * MiB),
            PartSpec("ext4", 24 * MiB, ("-t", "ext3", "-b", "2048"), tree_bytes=3 * MiB),
            PartSpec(
                "ext4",
                32 * MiB,
                ("-b", "1024", "-g", "1024", "-O", "meta_bg,^resize_inode"),
                tree_bytes=4 * MiB,
            ),
        ],
    ),
    "mbr-fat12-ext4-32bit-empty": (
        "mbr",
        [
            PartSpec("fat12", 8 * MiB, ("-s", "8"), tree_bytes=1 * MiB),
            PartSpec(
                "ext4",
                40 * MiB,
                ("-b", "4096", "-O", "^64bit,^metadata_csum,^uninit_bg"),
                tree_bytes=5 * MiB,
            ),
            PartSpec("ext4", 24 * MiB, ("-O", "inline_data")),
        ],
    ),
}


@dataclass(frozen=True)
class Proof:
    disk: Path
    parts: list[DiskPart]
    amap: AllocationMap
    garbage: Path
    work: Path
    # partition number -> (fsck exit code, file tree) read from the garbage copy
    readbacks: dict[int, tuple[int, dict[str, bytes | None]]]


def exact_map(path: Path) -> AllocationMap:
    """The map as computed, before gaps are filled: the strictest thing to prove."""
    with FileReader(path) as io:
        table = read_partition_table(io, name=str(path))
        return allocation_map(io, table, coalesce_gap_bytes=0, block_bytes=1)


@pytest.fixture(scope="module", params=list(DISKS))
def proof(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Proof:
    require("sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy", "e2fsck", "debugfs", "fsck.fat")
    scheme, specs = DISKS[request.param]
    work = tmp_path_factory.mktemp(request.param)
    disk, parts = build_disk(work, scheme, specs, gap_bytes=1 * MiB)
    amap = exact_map(disk)
    garbage = work / "garbage.img"
    garbage_copy(disk, garbage, rng.complement(amap.ranges, 0, amap.size_bytes), seed=3)
    readbacks = {p.number: readback(garbage, p, work / "garbage") for p in filesystems(parts)}
    return Proof(disk, parts, amap, garbage, work, readbacks)


def filesystems(parts: list[DiskPart]) -> list[DiskPart]:
    return [p for p in parts if p.kind == "ext4" or p.kind.startswith("fat")]


def readback(image: Path, part: DiskPart, work: Path) -> tuple[int, dict[str, bytes | None]]:
    """fsck's exit code and the file tree of one partition of `image`."""
    return partition_readback(
        image, part.number, part.start_bytes, part.size_bytes, ext4=part.kind == "ext4", work=work
    )


def test_every_filesystem_is_analysed(proof: Proof) -> None:
    methods = {p.number: p.method for p in proof.amap.partitions}
    expected = {
        p.number: {"raw": "whole", "ext4": "ext4"}.get(p.kind, "fat")
        for p in proof.parts
        if p.kind != "extended"
    }
    assert methods == expected
    assert proof.amap.warnings == ()


def test_every_file_reads_back_despite_garbage_in_unmapped_space(proof: Proof) -> None:
    for part in filesystems(proof.parts):
        _, tree = proof.readbacks[part.number]
        assert tree == expected_tree(part.tree), f"partition {part.number} ({part.kind})"


def test_filesystems_check_clean_despite_garbage_in_unmapped_space(proof: Proof) -> None:
    for part in filesystems(proof.parts):
        code, _ = proof.readbacks[part.number]
        assert code == 0, f"partition {part.number} ({part.kind})"


def test_partition_table_reads_back_despite_garbage(proof: Proof) -> None:
    assert sfdisk_dump(proof.garbage) == sfdisk_dump(proof.disk)


def test_garbage_actually_landed_in_each_filesystem(proof: Proof) -> None:
    # Guards the proof itself: every filesystem really had free bytes overwritten.
    for part in filesystems(proof.parts):
        end = part.start_bytes + part.size_bytes
        unmapped = rng.complement(proof.amap.ranges, part.start_bytes, end)
        assert rng.total(unmapped) > part.size_bytes / 4, f"partition {part.number}"


def ext4_inode_tables(proof: Proof) -> list[tuple[DiskPart, Ext4Filesystem, list[int]]]:
    """Each ext4 partition of the disk, its filesystem, and per group how many leading inode
    table blocks the map keeps."""
    out = []
    with FileReader(proof.disk) as io:
        for part in proof.parts:
            if part.kind == "ext4":
                fs = Ext4Filesystem(SliceIO(io, part.start_bytes, part.size_bytes))
                out.append((part, fs, fs.inode_table_blocks_in_use()))
    return out


def table_bytes(
    part: DiskPart, fs: Ext4Filesystem, first_block: int, count: int
) -> tuple[int, int]:
    return part.start_bytes + first_block * fs.block_size, count * fs.block_size


def test_garbage_landed_in_inode_table_tails(proof: Proof) -> None:
    # Guards the proof itself: the skipped inode-table tails really were overwritten.
    tails = [
        table_bytes(part, fs, d.inode_table + used, fs.inode_table_blocks - used)
        for part, fs, in_use in ext4_inode_tables(proof)
        for d, used in zip(fs.descriptors, in_use, strict=True)
    ]
    unmapped = rng.complement(proof.amap.ranges, 0, proof.amap.size_bytes)
    assert rng.total(tails) > 1 * MiB
    assert rng.merge([*unmapped, *tails]) == unmapped


def test_inode_tables_without_checksums_or_zeroed_flag_stay_mapped(proof: Proof) -> None:
    whole_tables = [
        table_bytes(part, fs, d.inode_table, fs.inode_table_blocks)
        for part, fs, _ in ext4_inode_tables(proof)
        for d in fs.descriptors
        if not (fs.group_csum and d.flags & BG_INODE_ZEROED)
    ]
    assert whole_tables
    assert rng.merge([*proof.amap.ranges, *whole_tables]) == list(proof.amap.ranges)


def test_files_added_later_land_cleanly_over_garbage_in_inode_table_tails(proof: Proof) -> None:
    # What a device does after flashing: create files, so inodes are allocated inside the
    # tails that were left out. debugfs (libext2fs) stands in for the kernel, which would need
    # a mount.
    payload = proof.work / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 37)
    commands = "".join(
        [f"mkdir added-dir{i}\n" for i in range(20)]
        + [f"write {payload} added-dir{i % 20}/f{i}\n" for i in range(200)]
    )
    grown = 0
    for part, fs, in_use in ext4_inode_tables(proof):
        if all(used == fs.inode_table_blocks for used in in_use):
            continue  # nothing was left out of this one
        fs_file = extract(
            proof.garbage,
            part.start_bytes,
            part.size_bytes,
            proof.work / f"added-p{part.number}.fs",
        )
        run(["debugfs", "-w", "-f", "-", fs_file], stdin=commands.encode())
        with FileReader(fs_file) as io:
            after = Ext4Filesystem(io).inode_table_blocks_in_use()
        grown += sum(new > old for new, old in zip(after, in_use, strict=True))
        assert run(["e2fsck", "-fn", fs_file], check=False).returncode == 0, part.number
        copied = run(["debugfs", "-R", "cat added-dir7/f187", fs_file]).stdout
        assert copied == payload.read_bytes(), part.number
        fs_file.unlink()
    assert grown  # new inodes really went past the old end of the used part


def test_map_covers_every_block_holding_data(proof: Proof) -> None:
    data = nonzero_blocks(proof.disk, 512)
    assert rng.merge([*proof.amap.ranges, *data]) == list(proof.amap.ranges)


def test_map_covers_every_block_bmaptool_maps_with_data(proof: Proof) -> None:
    require("bmaptool")
    bmap_path = proof.work / "bmaptool.bmap"
    run(["bmaptool", "create", "-o", bmap_path, proof.disk])
    theirs = read_bmap(bmap_path).byte_ranges()
    data = nonzero_blocks(proof.disk, 4096)
    theirs_with_data = [r for t in theirs for r in rng.clip(data, t[0], t[0] + t[1])]
    assert theirs_with_data
    ours = rng.align_out(proof.amap.ranges, 4096, proof.amap.size_bytes)
    assert rng.merge([*ours, *theirs_with_data]) == ours


def test_bmaptool_copies_with_our_bmap(proof: Proof) -> None:
    require("bmaptool")
    with FileReader(proof.disk) as io:
        default = allocation_map(io, read_partition_table(io, name="disk"))
        bmap_path = write_bmap(
            proof.work / "ours.bmap", default.ranges, default.size_bytes, image=io
        )
    copy = proof.work / "bmaptool-copy.img"
    run(["bmaptool", "-q", "copy", "--bmap", bmap_path, proof.disk, copy])
    for part in filesystems(proof.parts):
        code, tree = readback(copy, part, proof.work / "bmaptool")
        assert (code, tree) == (0, expected_tree(part.tree)), f"partition {part.number}"
    copy.unlink()


@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
def test_balena_layout_image_survives_garbage_in_unmapped_space(
    scheme: str, image_factory: Callable[..., BuiltImage], tmp_path: Path
) -> None:
    require("e2fsck", "debugfs", "fsck.fat", "mcopy")
    built = image_factory(scheme=scheme, fat_bits=16)
    amap = exact_map(built.path)
    assert amap.warnings == ()
    garbage = tmp_path / "garbage.img"
    garbage_copy(built.path, garbage, rng.complement(amap.ranges, 0, amap.size_bytes), seed=5)
    assert sfdisk_dump(garbage) == sfdisk_dump(built.path)
    files_seen = 0
    for part in built.partitions:
        if part.fs == "extended":
            continue
        dp = DiskPart(
            part.number,
            "ext4" if part.fs == "ext4" else "fat",
            part.start_bytes,
            part.size_bytes,
            None,
        )
        original = readback(built.path, dp, tmp_path / "original")
        assert original[0] == 0, part.label
        assert readback(garbage, dp, tmp_path / "garbage") == original, part.label
        files_seen += sum(data is not None for data in original[1].values())
    assert files_seen > 10
