"""Writing MBR and GPT partition tables, checked with the real sfdisk and fdisk."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flasher.image.byteio import FileReader, FileReadWriter, MemoryIO
from flasher.image.layout import (
    GPT_EFI_SYSTEM,
    GPT_LINUX_FILESYSTEM,
    MBR_FAT32_LBA,
    MBR_LINUX,
    PartitionSpec,
    deterministic_guid,
    write_gpt,
    write_mbr,
)
from flasher.image.partitions import read_partition_table

MiB = 1024 * 1024
IMAGE_BYTES = 64 * MiB
BALENA_MBR = [
    PartitionSpec(4 * MiB, 8 * MiB, MBR_FAT32_LBA, bootable=True),
    PartitionSpec(12 * MiB, 8 * MiB, MBR_LINUX),
    PartitionSpec(20 * MiB, 4 * MiB, MBR_LINUX),
    PartitionSpec(28 * MiB, 8 * MiB, MBR_LINUX, logical=True),
    PartitionSpec(40 * MiB, 24 * MiB, MBR_LINUX, logical=True),
]
BALENA_GPT = [
    PartitionSpec(4 * MiB, 8 * MiB, GPT_EFI_SYSTEM, name="resin-boot", bootable=True),
    PartitionSpec(12 * MiB, 8 * MiB, GPT_LINUX_FILESYSTEM, name="resin-rootA"),
    PartitionSpec(20 * MiB, 4 * MiB, GPT_LINUX_FILESYSTEM, name="résin-rootB"),
    PartitionSpec(24 * MiB, 39 * MiB, GPT_LINUX_FILESYSTEM, name="resin-data"),
]


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")


def written(
    tmp_path: Path,
    scheme: str,
    specs: list[PartitionSpec],
    *,
    seed: str = "seed",
    sector_size: int = 512,
) -> Path:
    path = tmp_path / f"{scheme}.img"
    with path.open("wb") as f:
        f.truncate(IMAGE_BYTES)
    with FileReadWriter(path) as io:
        if scheme == "mbr":
            write_mbr(io, specs, disk_signature=0xCAFE0001)
        else:
            write_gpt(io, specs, seed=seed, sector_size=sector_size)
    return path


def sfdisk_json(path: Path) -> dict[str, Any]:
    _require("sfdisk")
    out = subprocess.run(["sfdisk", "-J", str(path)], check=True, capture_output=True).stdout
    table: dict[str, Any] = json.loads(out)["partitiontable"]
    return table


@pytest.mark.parametrize(("scheme", "specs"), [("mbr", BALENA_MBR), ("gpt", BALENA_GPT)])
def test_sfdisk_verifies_the_written_table(
    tmp_path: Path, scheme: str, specs: list[PartitionSpec]
) -> None:
    _require("sfdisk")
    image = written(tmp_path, scheme, specs)
    result = subprocess.run(["sfdisk", "--verify", str(image)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No errors detected" in result.stdout


def test_mbr_layout_matches_the_specs_in_sfdisk(tmp_path: Path) -> None:
    image = written(tmp_path, "mbr", BALENA_MBR)
    table = sfdisk_json(image)
    assert table["label"] == "dos" and table["id"] == "0xcafe0001"
    got = [
        (p["start"] * 512, p["size"] * 512, p["type"], p.get("bootable", False))
        for p in table["partitions"]
    ]
    extended = (24 * MiB, 40 * MiB, "f", False)  # from the end of rootB to the end of data
    want = [
        (s.start_bytes, s.size_bytes, s.type_id[2:].lstrip("0"), s.bootable) for s in BALENA_MBR
    ]
    assert got == [*want[:3], extended, *want[3:]]


def test_gpt_layout_matches_the_specs_in_sfdisk(tmp_path: Path) -> None:
    image = written(tmp_path, "gpt", BALENA_GPT, seed="sandbox")
    table = sfdisk_json(image)
    assert table["id"] == str(deterministic_guid("sandbox", "disk")).upper()
    got = [
        (
            p["start"] * 512,
            p["size"] * 512,
            p["type"],
            p["name"],
            p["uuid"],
            "LegacyBIOSBootable" in p.get("attrs", ""),
        )
        for p in table["partitions"]
    ]
    want = [
        (
            s.start_bytes,
            s.size_bytes,
            s.type_id.upper(),
            s.name,
            str(deterministic_guid("sandbox", f"partition {i}")).upper(),
            s.bootable,
        )
        for i, s in enumerate(BALENA_GPT, start=1)
    ]
    assert got == want


@pytest.mark.parametrize(("scheme", "specs"), [("mbr", BALENA_MBR), ("gpt", BALENA_GPT)])
def test_written_table_reads_back(tmp_path: Path, scheme: str, specs: list[PartitionSpec]) -> None:
    with FileReader(written(tmp_path, scheme, specs)) as io:
        table = read_partition_table(io, name="x.img")
    data = table.data_partitions()
    assert (table.scheme, table.warnings) == (scheme, ())
    assert [(p.start_bytes, p.size_bytes, p.bootable) for p in data] == [
        (s.start_bytes, s.size_bytes, s.bootable) for s in specs
    ]
    assert [p.number for p in data] == ([1, 2, 3, 5, 6] if scheme == "mbr" else [1, 2, 3, 4])


def test_gpt_with_4096_byte_sectors_is_read_by_fdisk_and_by_us(tmp_path: Path) -> None:
    _require("fdisk")
    image = written(tmp_path, "gpt", BALENA_GPT[:2], sector_size=4096)
    listing = subprocess.run(
        ["fdisk", "-b", "4096", "-x", str(image)], check=True, capture_output=True, text=True
    ).stdout
    assert "resin-boot" in listing and "resin-rootA" in listing
    assert f"{4 * MiB // 4096} " in listing
    with FileReader(image) as io:
        table = read_partition_table(io, name="4k.img")
    assert table.sector_size == 4096
    assert [(p.start_bytes, p.name) for p in table.partitions] == [
        (4 * MiB, "resin-boot"),
        (12 * MiB, "resin-rootA"),
    ]


def test_same_seed_gives_identical_bytes_and_another_seed_other_guids() -> None:
    images = {}
    for seed in ("a", "a", "b"):
        io = MemoryIO(IMAGE_BYTES)
        write_gpt(io, BALENA_GPT, seed=seed)
        images.setdefault(seed, []).append(io.getvalue())
    assert images["a"][0] == images["a"][1]
    assert images["a"][0] != images["b"][0]
    assert deterministic_guid("a", "disk") != deterministic_guid("b", "disk")


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            [PartitionSpec(MiB, 4 * MiB, MBR_LINUX), PartitionSpec(4 * MiB, MiB, MBR_LINUX)],
            "overlap",
        ),
        ([PartitionSpec(MiB + 1, MiB, MBR_LINUX)], "multiples"),
        ([PartitionSpec(60 * MiB, 8 * MiB, MBR_LINUX)], "outside"),
        ([PartitionSpec(i * MiB, MiB, MBR_LINUX) for i in range(1, 6)], "at most 4"),
        ([PartitionSpec(MiB, MiB, "0x05")], "not an MBR data partition type"),
        (
            [
                PartitionSpec(MiB, MiB, MBR_LINUX),
                PartitionSpec(2 * MiB, MiB, MBR_LINUX, logical=True),
            ],
            "free sector before it",
        ),
    ],
)
def test_impossible_mbr_layouts_are_refused(specs: list[PartitionSpec], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_mbr(MemoryIO(IMAGE_BYTES), specs)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([PartitionSpec(512 * 10, MiB, GPT_LINUX_FILESYSTEM)], "outside"),
        ([PartitionSpec(MiB, MiB, GPT_LINUX_FILESYSTEM, name="n" * 37)], "longer than 36"),
    ],
)
def test_impossible_gpt_layouts_are_refused(specs: list[PartitionSpec], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_gpt(MemoryIO(IMAGE_BYTES), specs, seed="x")
