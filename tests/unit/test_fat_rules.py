"""FAT formatting, the name and timestamp rules, and damaged volumes refused with the problem
named; cross-checked with the real dosfstools and mtools."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from flasher.errors import ImageError
from flasher.image.byteio import FileReader, FileReadWriter, MemoryIO
from flasher.image.fat import FatFilesystem, format_fat
from flasher.image.fat.entries import fat_stamp, short_name_for
from tests.support.fattools import (
    BITS,
    EPOCH,
    GEOMETRY,
    MTOOLS_ENV,
    MiB,
    fsck_clean,
    make_fat,
    mdir_names,
    mtools_write,
    payload,
    require_tools,
)


@pytest.mark.parametrize("bits", BITS)
def test_format_fat_passes_fsck_and_works_with_mtools(tmp_path: Path, bits: int) -> None:
    require_tools("fsck.fat", "mcopy", "mdir")
    image = tmp_path / "formatted.img"
    with image.open("wb") as f:
        f.truncate(GEOMETRY[bits][0])
    with FileReadWriter(image) as io:
        format_fat(io, label="resin-boot", fat_bits=bits, volume_id=0x0BADCAFE, hidden_sectors=2048)
        fs = FatFilesystem(io)
        assert (fs.fat_type, fs.label) == (f"fat{bits}", "resin-boot")
        fs.write_file("/device-type.json", b'{"slug":"x"}', mtime=EPOCH)
    fsck_clean(image)
    verbose = subprocess.run(
        ["fsck.fat", "-n", "-v", str(image)], capture_output=True, text=True
    ).stdout
    assert "2048 hidden sectors" in verbose
    mtools_write(image, "/from mtools.txt", payload(5000), tmp_path)
    fsck_clean(image)
    assert mdir_names(image) == ["device-type.json", "from mtools.txt"]
    assert FatFilesystem(FileReader(image)).read_file("/from mtools.txt") == payload(5000)
    info = subprocess.run(
        ["minfo", "-i", str(image), "::"], capture_output=True, text=True, env=MTOOLS_ENV
    ).stdout
    assert "serial number: 0BADCAFE" in info
    assert 'disk label="resin-boot "' in info


def test_format_fat_is_deterministic() -> None:
    images = []
    for _ in range(2):
        io = MemoryIO(GEOMETRY[16][0])
        format_fat(io, label="resin-boot", fat_bits=16, volume_id=1)
        images.append(io.getvalue())
    assert images[0] == images[1]


@pytest.mark.parametrize(("bits", "size"), [(16, 1 * MiB), (32, 8 * MiB), (12, 512 * MiB)])
def test_format_fat_rejects_sizes_outside_the_type(bits: int, size: int) -> None:
    class Sized(MemoryIO):
        def __init__(self) -> None:
            super().__init__(0)

        @property
        def size(self) -> int:
            return size

    with pytest.raises(ValueError, match=f"FAT{bits}"):
        format_fat(Sized(), label="x", fat_bits=bits)


@pytest.mark.parametrize("lookup", ["/CONFIG.JSON", "/config.JSON", "/CONFIG~1.JSO", "config.json"])
def test_lookups_ignore_case_and_accept_short_names(lookup: str) -> None:
    io = MemoryIO(GEOMETRY[16][0])
    format_fat(io, label="", fat_bits=16)
    fs = FatFilesystem(io)
    fs.write_file("/Config.json", b"{}", mtime=EPOCH)
    assert fs.read_file(lookup) == b"{}"


@pytest.mark.parametrize(
    "name", ["a:b", "what?", "trailing.", "trailing ", "x" * 256, "tab\there", 'quote"']
)
def test_invalid_names_are_rejected_before_writing(name: str) -> None:
    io = MemoryIO(GEOMETRY[12][0])
    format_fat(io, label="", fat_bits=12)
    before = io.getvalue()
    with pytest.raises(ImageError) as err:
        FatFilesystem(io).write_file("/" + name, b"x", mtime=EPOCH)
    assert err.value.problem == "bad_name"
    assert io.getvalue() == before


@pytest.mark.parametrize(
    ("name", "taken", "short"),
    [
        ("README.TXT", set(), b"README  TXT"),
        ("Config.txt", set(), b"CONFIG  TXT"),
        ("config.json", set(), b"CONFIG~1JSO"),
        ("config.json", {b"CONFIG~1JSO"}, b"CONFIG~2JSO"),
        ("resin-wifi", set(), b"RESIN-~1   "),
        (".bashrc", set(), b"BASHRC~1   "),
        ("a b.txt", set(), b"AB~1    TXT"),
        ("résumé.txt", set(), b"R_SUM_~1TXT"),
        ("many.dots.tar.gz", set(), b"MANY~1  GZ "),
    ],
)
def test_short_names_follow_the_windows_basis_and_tail_rules(
    name: str, taken: set[bytes], short: bytes
) -> None:
    assert short_name_for(name, taken) == short


@pytest.mark.parametrize(
    ("mtime", "date", "time"),
    [
        (EPOCH, (2023 - 1980) << 9 | 11 << 5 | 14, 22 << 11 | 13 << 5 | 10),
        (
            datetime(2023, 11, 15, 0, 13, 20, tzinfo=timezone(timedelta(hours=2))),
            (2023 - 1980) << 9 | 11 << 5 | 14,
            22 << 11 | 13 << 5 | 10,
        ),
        (datetime(1970, 1, 1, tzinfo=UTC), 1 << 5 | 1, 0),
    ],
)
def test_timestamps_are_utc_and_clamped_to_the_fat_range(
    mtime: datetime | int, date: int, time: int
) -> None:
    stamp = fat_stamp(mtime)
    assert (stamp.date, stamp.time) == (date, time)


def _image_with_chain(tmp_path: Path, bits: int) -> tuple[Path, list[int]]:
    image = make_fat(tmp_path, bits)
    mtools_write(image, "/chain.bin", payload(5000), tmp_path)
    geo = FatFilesystem(FileReader(image)).geometry
    first = 3 if bits == 32 else 2  # mtools' first file after the FAT32 root cluster
    return image, list(range(first, first + -(-5000 // geo.cluster_size)))


@pytest.mark.parametrize("bits", [16, 32])
@pytest.mark.parametrize("link", ["loop", "out_of_range", "free"])
def test_broken_cluster_chains_are_bad_filesystem(tmp_path: Path, bits: int, link: str) -> None:
    image, chain = _image_with_chain(tmp_path, bits)
    width = bits // 8
    target = {"loop": chain[0], "out_of_range": 0xFFF0 if bits == 16 else 0x0FFFFF00, "free": 0}[
        link
    ]
    with FileReadWriter(image) as io:
        geo = FatFilesystem(io).geometry
        for copy in range(geo.fat_count):
            io.pwrite(
                target.to_bytes(width, "little"),
                geo.fat_offset + copy * geo.fat_bytes + chain[-2] * width,
            )
        with pytest.raises(ImageError) as err:
            FatFilesystem(io).read_file("/chain.bin")
    assert err.value.problem == "bad_filesystem"


@pytest.mark.parametrize(("offset", "value"), [(11, b"\0\0"), (13, b"\3"), (0, b"\0"), (16, b"\0")])
def test_corrupt_boot_sector_is_bad_filesystem(tmp_path: Path, offset: int, value: bytes) -> None:
    image = make_fat(tmp_path, 16)
    with FileReadWriter(image) as io:
        io.pwrite(value, offset)
        with pytest.raises(ImageError) as err:
            FatFilesystem(io)
    assert err.value.problem == "bad_filesystem"


@pytest.mark.parametrize(
    ("path", "problem"),
    [("/missing.txt", "not_found"), ("/dir", "is_a_directory"), ("/file/below", "not_a_directory")],
)
def test_reading_wrong_paths_names_the_problem(path: str, problem: str) -> None:
    io = MemoryIO(GEOMETRY[12][0])
    format_fat(io, label="", fat_bits=12)
    fs = FatFilesystem(io)
    fs.makedirs("/dir")
    fs.write_file("/file", b"x", mtime=EPOCH)
    with pytest.raises(ImageError) as err:
        fs.read_file(path)
    assert err.value.problem == problem


def test_long_name_with_a_wrong_checksum_falls_back_to_the_short_name() -> None:
    io = MemoryIO(GEOMETRY[16][0])
    format_fat(io, label="", fat_bits=16)
    fs = FatFilesystem(io)
    fs.write_file("/config.json", b"{}", mtime=EPOCH)
    root = fs.geometry.root_offset
    io.pwrite(b"\x00", root + 13)  # checksum byte of the (only) long-name entry
    assert [e.name for e in FatFilesystem(io).listdir("/")] == ["CONFIG~1.JSO"]
