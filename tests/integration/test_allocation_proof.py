"""Proof that the allocation map is safe: garbage in every unmapped byte changes nothing.

For each disk (MBR and GPT; FAT12/16/32; ext2/3/4 in several layouts) the map is computed, a copy
gets pseudo-random garbage in every byte the map leaves out, and then every filesystem on the
copy must check clean (e2fsck -fn, fsck.fat -n) and give back every file byte for byte (debugfs
rdump, mcopy -s), and the partition table must read back the same (sfdisk -d). The map must also
cover every block that holds data and every block bmaptool maps with data, and bmaptool must
accept the .bmap we write for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from flasher.image import ranges as rng
from flasher.image.bmap import read_bmap, write_bmap
from flasher.image.io import FileReader
from flasher.image.partitions import read_partition_table
from flasher.image.sparse import AllocationMap, allocation_map
from tests.support.filesystems import (
    DiskPart,
    MiB,
    PartSpec,
    build_disk,
    expected_tree,
    ext4_readback,
    extract,
    fat_readback,
    garbage_copy,
    nonzero_blocks,
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
    work.mkdir(parents=True, exist_ok=True)
    fs_file = extract(image, part.start_bytes, part.size_bytes, work / f"p{part.number}.fs")
    reader = ext4_readback if part.kind == "ext4" else fat_readback
    fsck, tree = reader(fs_file, work / f"p{part.number}")
    fs_file.unlink()
    return fsck.returncode, tree


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
