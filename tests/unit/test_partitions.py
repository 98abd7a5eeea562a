"""MBR/GPT parsing and boot-partition discovery, on tables written by the real sfdisk."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flasher.errors import ImageError
from flasher.image.byteio import FileReader, FileReadWriter, MemoryIO
from flasher.image.partitions import (
    PartitionTable,
    filesystem_of,
    find_boot_partition,
    read_partition_table,
)

MiB = 1024 * 1024
IMAGE_BYTES = 48 * MiB
# balenaOS-like: boot, rootA, rootB, extended holding state and data
MBR_SCRIPT = """label: dos
label-id: 0x1234abcd
start=2048, size=8192, type=c, bootable
start=10240, size=8192, type=83
start=18432, size=8192, type=83
start=26624, type=5
start=28672, size=8192, type=83
start=38912, size=8192, type=83
"""
GPT_SCRIPT = """label: gpt
label-id: 5A1E2C3D-1111-4222-8333-444455556666
start=2048, size=8192, type=uefi, name="resin-boot", uuid=0B0B0B0B-1111-4222-8333-000000000001, attrs="LegacyBIOSBootable"
start=10240, size=8192, type=linux, name="resin-rootA", uuid=0B0B0B0B-1111-4222-8333-000000000002
start=18432, size=8192, type=linux, name="résin-data", uuid=0B0B0B0B-1111-4222-8333-000000000003
"""  # noqa: E501


def _require(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


def sfdisk_image(tmp_path: Path, script: str, size: int = IMAGE_BYTES) -> Path:
    _require("sfdisk")
    path = tmp_path / "disk.img"
    with path.open("wb") as f:
        f.truncate(size)
    subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path)],
        input=script.encode(),
        check=True,
        capture_output=True,
    )
    return path


def sfdisk_json(path: Path) -> dict[str, Any]:
    out = subprocess.run(["sfdisk", "-J", str(path)], check=True, capture_output=True).stdout
    table: dict[str, Any] = json.loads(out)["partitiontable"]
    return table


def table_of(path: Path) -> PartitionTable:
    with FileReader(path) as io:
        return read_partition_table(io, name=path.name)


def put_filesystem(
    tmp_path: Path,
    image: Path,
    start: int,
    size: int,
    kind: str,
    label: str = "",
    files: dict[str, bytes] | None = None,
) -> None:
    """Make a filesystem with the real mkfs tool and copy it into `image` at `start`."""
    fs_path = tmp_path / f"fs-{start}.img"
    with fs_path.open("wb") as f:
        f.truncate(size)
    if kind == "ext4":
        _require("mkfs.ext4")
        cmd = ["mkfs.ext4", "-q", "-F", *(["-L", label] if label else []), str(fs_path)]
    else:
        _require("mkfs.vfat")
        spc = "4" if kind == "fat12" else "1"
        cmd = [
            "mkfs.vfat",
            "-F",
            kind[3:],
            "-s",
            spc,
            *(["-n", label] if label else []),
            str(fs_path),
        ]
    subprocess.run(cmd, check=True, capture_output=True)
    if files:
        _require("mcopy")
        for name, data in files.items():
            src = tmp_path / "src"
            src.write_bytes(data)
            subprocess.run(
                ["mcopy", "-i", str(fs_path), str(src), f"::{name}"],
                check=True,
                capture_output=True,
                env={"MTOOLS_SKIP_CHECK": "1"},
            )
    with FileReadWriter(image) as io:
        io.pwrite(fs_path.read_bytes(), start)


def patch(path: Path, offset: int, data: bytes) -> None:
    with FileReadWriter(path) as io:
        io.pwrite(data, offset)


def test_mbr_with_logical_partitions_matches_sfdisk(tmp_path: Path) -> None:
    image = sfdisk_image(tmp_path, MBR_SCRIPT)
    table = table_of(image)
    expected = sfdisk_json(image)
    assert table.scheme == "mbr" and table.disk_id == expected["id"]
    got = [
        (
            f"{image}{p.number}",
            p.start_bytes // 512,
            p.size_bytes // 512,
            p.type_id.removeprefix("0x").lstrip("0"),
            p.bootable,
        )
        for p in table.partitions
    ]
    want = [
        (p["node"], p["start"], p["size"], p["type"], p.get("bootable", False))
        for p in expected["partitions"]
    ]
    assert got == want
    assert [p.number for p in table.partitions if p.is_extended] == [4]
    assert [p.number for p in table.data_partitions()] == [1, 2, 3, 5, 6]


def test_mbr_metadata_ranges_are_the_mbr_and_every_ebr(tmp_path: Path) -> None:
    image = sfdisk_image(tmp_path, MBR_SCRIPT)
    table = table_of(image)
    raw = image.read_bytes()
    assert table.metadata_ranges[0] == (0, 512)
    ebrs = table.metadata_ranges[1:]
    assert len(ebrs) == 2
    extended = next(p for p in table.partitions if p.is_extended)
    for offset, length in ebrs:
        assert length == 512 and raw[offset + 510 : offset + 512] == b"\x55\xaa"
        assert extended.start_bytes <= offset < extended.end_bytes


def test_gpt_matches_sfdisk(tmp_path: Path) -> None:
    image = sfdisk_image(tmp_path, GPT_SCRIPT)
    table = table_of(image)
    expected = sfdisk_json(image)
    assert (table.scheme, table.disk_id.upper(), table.warnings) == ("gpt", expected["id"], ())
    got = [
        (
            f"{image}{p.number}",
            p.start_bytes // 512,
            p.size_bytes // 512,
            p.type_id.upper(),
            p.uuid.upper(),
            p.name,
            p.bootable,
        )
        for p in table.partitions
    ]
    want = [
        (
            p["node"],
            p["start"],
            p["size"],
            p["type"],
            p["uuid"],
            p["name"],
            "LegacyBIOSBootable" in p.get("attrs", ""),
        )
        for p in expected["partitions"]
    ]
    assert got == want


def test_gpt_metadata_ranges_cover_both_headers_and_entry_arrays(tmp_path: Path) -> None:
    image = sfdisk_image(tmp_path, GPT_SCRIPT)
    last = IMAGE_BYTES - 512
    assert table_of(image).metadata_ranges == (
        (0, 512),
        (512, 512),
        (1024, 128 * 128),
        (last - 128 * 128, 128 * 128),
        (last, 512),
    )


@pytest.mark.parametrize(
    ("what", "offset"),
    [
        ("header CRC32", 512 + 16),
        ("entry array CRC32", 1024 + 56),  # a byte of partition 1's name
        ("signature", 512),
    ],
)
def test_corrupt_primary_gpt_falls_back_to_the_backup(
    tmp_path: Path, what: str, offset: int
) -> None:
    image = sfdisk_image(tmp_path, GPT_SCRIPT)
    good = table_of(image)
    patch(image, offset, b"\x7f")
    table = table_of(image)
    assert table.partitions == good.partitions
    assert len(table.warnings) == 1 and "primary GPT header is unusable" in table.warnings[0]
    expected = "no GPT signature" if what == "signature" else what
    assert expected in table.warnings[0]


def test_unusable_backup_gpt_is_a_warning(tmp_path: Path) -> None:
    image = sfdisk_image(tmp_path, GPT_SCRIPT)
    patch(image, IMAGE_BYTES - 512, bytes(512))
    table = table_of(image)
    assert [p.name for p in table.partitions] == ["resin-boot", "resin-rootA", "résin-data"]
    assert len(table.warnings) == 1 and "backup GPT header is unusable" in table.warnings[0]


def test_gpt_with_both_headers_corrupt_is_bad_partition_table(tmp_path: Path) -> None:
    image = sfdisk_image(tmp_path, GPT_SCRIPT)
    patch(image, 512 + 16, b"\x7f")
    patch(image, IMAGE_BYTES - 512 + 16, b"\x7f")
    with pytest.raises(ImageError) as err:
        table_of(image)
    assert err.value.problem == "bad_partition_table"
    assert "header CRC32 mismatch" in str(err.value)


def test_ebr_chain_loop_is_bad_partition_table(tmp_path: Path) -> None:
    image = sfdisk_image(tmp_path, MBR_SCRIPT)
    second_ebr = table_of(image).metadata_ranges[2][0]
    extended_start = 26624 * 512
    # The second EBR's link entry points back at the first EBR (relative start 0).
    patch(
        image,
        second_ebr + 462,
        bytes([0, 0, 0, 0, 0x05, 0, 0, 0])
        + (0).to_bytes(4, "little")
        + (8192).to_bytes(4, "little"),
    )
    assert second_ebr != extended_start
    with pytest.raises(ImageError) as err:
        table_of(image)
    assert err.value.problem == "bad_partition_table" and "loops" in str(err.value)


@pytest.mark.parametrize(
    ("offset", "data", "message"),
    [
        (446, b"\x12", "invalid status byte"),
        (446 + 16 + 8, (4096).to_bytes(4, "little"), "overlap"),
        (26624 * 512 + 510, b"\0\0", "no 0x55AA signature"),
    ],
)
def test_corrupt_mbr_is_bad_partition_table(
    tmp_path: Path, offset: int, data: bytes, message: str
) -> None:
    image = sfdisk_image(tmp_path, MBR_SCRIPT)
    patch(image, offset, data)
    with pytest.raises(ImageError) as err:
        table_of(image)
    assert err.value.problem == "bad_partition_table" and message in str(err.value)


@pytest.mark.parametrize("script", [MBR_SCRIPT, GPT_SCRIPT])
def test_partition_past_the_end_of_the_image_is_truncated(tmp_path: Path, script: str) -> None:
    image = sfdisk_image(tmp_path, script)
    image.write_bytes(image.read_bytes()[: 10 * MiB])
    with pytest.raises(ImageError) as err:
        table_of(image)
    assert err.value.problem == "truncated"


def test_image_smaller_than_a_sector_is_truncated() -> None:
    with pytest.raises(ImageError) as err:
        read_partition_table(MemoryIO(100), name="tiny.img")
    assert err.value.problem == "truncated" and "tiny.img" in str(err.value)


@pytest.mark.parametrize("content", ["zeros", "fat16", "ext4"])
def test_no_table_means_the_whole_image_is_the_filesystem(tmp_path: Path, content: str) -> None:
    image = tmp_path / "bare.img"
    with image.open("wb") as f:
        f.truncate(8 * MiB)
    if content != "zeros":
        put_filesystem(tmp_path, image, 0, 8 * MiB, content, label="resin-boot")
    table = table_of(image)
    assert (table.scheme, table.partitions) == ("none", ())
    with FileReader(image) as io:
        boot = find_boot_partition(io, table)
    assert boot is not None and (boot.number, boot.start_bytes, boot.size_bytes) == (0, 0, 8 * MiB)


@pytest.mark.parametrize(
    ("kind", "label"),
    [
        ("fat12", "resin-boot"),
        ("fat16", "flash-boot"),
        ("fat32", "balena-boot"),
        ("ext4", "resin-rootA"),
        ("fat16", ""),
    ],
)
def test_filesystem_of_names_kind_and_label(tmp_path: Path, kind: str, label: str) -> None:
    size = 34 * MiB if kind == "fat32" else 4 * MiB
    image = sfdisk_image(
        tmp_path, f"label: dos\nstart=2048, size={size // 512}, type=c\n", size=size + 2 * MiB
    )
    put_filesystem(tmp_path, image, MiB, size, kind, label=label)
    table = table_of(image)
    with FileReader(image) as io:
        info = filesystem_of(io, table.partitions[0])
    assert (info.kind, info.label) == (kind, label)


def test_filesystem_of_unformatted_partition_is_unknown(tmp_path: Path) -> None:
    image = sfdisk_image(tmp_path, MBR_SCRIPT)
    with FileReader(image) as io:
        kinds = {filesystem_of(io, p).kind for p in table_of(image).partitions}
    assert kinds == {"unknown"}


FIND_CASES = {
    # name: (script, {partition number: (fs kind, label, files)}, expected boot number)
    "gpt_name": (
        GPT_SCRIPT.replace('"resin-boot"', '"other"').replace('"resin-rootA"', '"resin-boot"'),
        {1: ("fat16", "", {}), 2: ("fat16", "", {})},
        2,
    ),
    "fat_label": (MBR_SCRIPT, {1: ("fat16", "DATA", {}), 2: ("fat16", "flash-boot", {})}, 2),
    "logical_label": (MBR_SCRIPT, {1: ("fat16", "", {}), 5: ("fat16", "balena-boot", {})}, 5),
    "device_type_json": (
        MBR_SCRIPT,
        {
            1: ("fat16", "", {"/other.txt": b"x"}),
            2: ("ext4", "", {}),
            3: ("fat16", "", {"/device-type.json": b"{}"}),
        },
        3,
    ),
    "fallback_1": (MBR_SCRIPT, {1: ("ext4", "", {}), 2: ("fat16", "", {})}, 1),
}


@pytest.mark.parametrize("case", list(FIND_CASES))
def test_find_boot_partition_follows_balena_rules(tmp_path: Path, case: str) -> None:
    script, filesystems, expected = FIND_CASES[case]
    image = sfdisk_image(tmp_path, script)
    table = table_of(image)
    by_number = {p.number: p for p in table.partitions}
    for number, (kind, label, files) in filesystems.items():
        part = by_number[number]
        put_filesystem(tmp_path, image, part.start_bytes, part.size_bytes, kind, label, files)
    with FileReader(image) as io:
        boot = find_boot_partition(io, table)
        assert boot is not None and boot.number == expected
    assert boot.start_bytes == by_number[expected].start_bytes


def test_find_boot_partition_without_partitions_is_none(tmp_path: Path) -> None:
    image = sfdisk_image(tmp_path, "label: dos\n")
    table = table_of(image)
    with FileReader(image) as io:
        assert (table.scheme, find_boot_partition(io, table)) == ("mbr", None)
