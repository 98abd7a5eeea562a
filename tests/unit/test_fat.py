"""FAT12/16/32 reading and writing, cross-checked with the real dosfstools and mtools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from flasher.errors import ImageError
from flasher.image.byteio import FileReader, FileReadWriter
from flasher.image.fat import FatFilesystem
from tests.support.fattools import (
    BITS,
    EPOCH,
    GEOMETRY,
    MTOOLS_ENV,
    fsck_clean,
    make_fat,
    mdir_names,
    mtools_write,
    payload,
)


def mtools_read(path: Path, fat_path: str) -> bytes:
    return subprocess.run(
        ["mcopy", "-n", "-i", str(path), f"::{fat_path}", "-"],
        check=True,
        capture_output=True,
        env=MTOOLS_ENV,
    ).stdout


@pytest.mark.parametrize("bits", BITS)
def test_reads_files_and_long_names_written_by_mtools(tmp_path: Path, bits: int) -> None:
    image = make_fat(tmp_path, bits)
    subprocess.run(
        ["mmd", "-i", str(image), "::/Nested Dir", "::/Nested Dir/inner"],
        check=True,
        env=MTOOLS_ENV,
    )
    files = {
        "/README.TXT": payload(10),
        "/config.json": payload(0),
        "/Nested Dir/inner/Ünïcødé name ☃.bin": payload(9000, 7),
    }
    for name, data in files.items():
        mtools_write(image, name, data, tmp_path)
    fs = FatFilesystem(FileReader(image))
    for name, data in files.items():
        assert fs.read_file(name) == data
    assert sorted(e.name for e in fs.listdir("/")) == ["Nested Dir", "README.TXT", "config.json"]
    assert fs.listdir("/Nested Dir/inner")[0].size == 9000


@pytest.mark.parametrize("bits", BITS)
def test_reports_type_cluster_size_and_label(tmp_path: Path, bits: int) -> None:
    fs = FatFilesystem(FileReader(make_fat(tmp_path, bits)))
    assert (fs.fat_type, fs.cluster_size, fs.label) == (
        f"fat{bits}",
        GEOMETRY[bits][1] * 512,
        "resin-boot",
    )


WRITE_CASES = [
    ("/CONFIG.TXT", 100),
    ("/config.json", 700),
    ("/résumé ☃ long name.txt", 3),
    ("/thirteen-char", 10),
    ("/twenty-six-characters.txt", 10),
    ("/empty", 0),
    ("/one-cluster", -1),
    ("/many-clusters.bin", -37),
]


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize(("name", "size"), WRITE_CASES)
def test_written_file_reads_back_with_mtools_and_fsck_is_clean(
    tmp_path: Path, bits: int, name: str, size: int
) -> None:
    image = make_fat(tmp_path, bits)
    with FileReadWriter(image) as io:
        fs = FatFilesystem(io)
        length = size if size >= 0 else -size * fs.cluster_size
        data = payload(length, 3)
        fs.write_file(name, data, mtime=EPOCH)
    fsck_clean(image)
    assert mtools_read(image, name) == data
    assert mdir_names(image) == [name.lstrip("/")]


def test_names_beyond_the_bmp_are_stored_as_utf16_surrogate_pairs(tmp_path: Path) -> None:
    # mtools 4.0 cannot decode surrogate pairs, so fsck and the raw entry are the witnesses.
    image = make_fat(tmp_path, 16)
    with FileReadWriter(image) as io:
        FatFilesystem(io).write_file("/emoji 😀.txt", b"smile", mtime=EPOCH)
    fsck_clean(image)
    assert "😀".encode("utf-16-le") == b"\x3d\xd8\x00\xde"
    assert b"\x3d\xd8\x00\xde" in image.read_bytes()
    assert FatFilesystem(FileReader(image)).read_file("/EMOJI 😀.TXT") == b"smile"
    assert [e.name for e in FatFilesystem(FileReader(image)).listdir("/")] == ["emoji 😀.txt"]


@pytest.mark.parametrize("bits", BITS)
def test_file_in_new_nested_directories_is_visible_to_mtools(tmp_path: Path, bits: int) -> None:
    image = make_fat(tmp_path, bits)
    with FileReadWriter(image) as io:
        fs = FatFilesystem(io)
        fs.makedirs("/system-connections/deeper/still", mtime=EPOCH)
        fs.write_file("/system-connections/deeper/resin-wifi", b"[connection]\n", mtime=EPOCH)
    fsck_clean(image)
    assert mtools_read(image, "/system-connections/deeper/resin-wifi") == b"[connection]\n"
    assert mdir_names(image, "/system-connections/deeper") == ["still", "resin-wifi"]


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize(("old_clusters", "new_clusters"), [(3, 5), (5, 2), (2, 2), (3, 0), (0, 3)])
def test_overwrite_replaces_contents_and_keeps_fsck_clean(
    tmp_path: Path, bits: int, old_clusters: int, new_clusters: int
) -> None:
    image = make_fat(tmp_path, bits)
    with FileReadWriter(image) as io:
        fs = FatFilesystem(io)
        cs = fs.cluster_size
        fs.write_file("/config.json", payload(old_clusters * cs - 5, 1), mtime=EPOCH)
        fs.write_file("/after.txt", b"neighbour", mtime=EPOCH)
        free_before = fs.free_bytes
        new = payload(max(new_clusters * cs - 9, 0), 2)
        fs.write_file("/CONFIG.JSON", new, mtime=EPOCH + 60)
        assert free_before - fs.free_bytes == (new_clusters - old_clusters) * cs
    fsck_clean(image)
    assert mtools_read(image, "/config.json") == new
    assert mtools_read(image, "/after.txt") == b"neighbour"
    assert mdir_names(image) == ["config.json", "after.txt"]


@pytest.mark.parametrize("bits", BITS)
def test_overwrite_keeps_the_first_cluster(tmp_path: Path, bits: int) -> None:
    image = make_fat(tmp_path, bits)
    mtools_write(image, "/config.json", payload(3000), tmp_path)
    before = image.read_bytes()
    with FileReadWriter(image) as io:
        FatFilesystem(io).write_file("/config.json", payload(100, 9), mtime=EPOCH)
    after = image.read_bytes()
    data_start = before.index(payload(3000)[:64])
    assert after[data_start : data_start + 100] == payload(100, 9)


@pytest.mark.parametrize("bits", BITS)
def test_overwrite_keeps_name_case_of_mtools_entry(tmp_path: Path, bits: int) -> None:
    image = make_fat(tmp_path, bits)
    mtools_write(image, "/cmdline.txt", b"old", tmp_path)
    with FileReadWriter(image) as io:
        FatFilesystem(io).write_file("/CMDLINE.TXT", b"new contents", mtime=EPOCH)
    fsck_clean(image)
    assert mdir_names(image) == ["cmdline.txt"]
    assert mtools_read(image, "/cmdline.txt") == b"new contents"


@pytest.mark.parametrize("bits", BITS)
def test_remove_frees_clusters_and_entry(tmp_path: Path, bits: int) -> None:
    image = make_fat(tmp_path, bits)
    with FileReadWriter(image) as io:
        fs = FatFilesystem(io)
        free_before = fs.free_bytes
        fs.makedirs("/dir")
        fs.write_file("/dir/a long file name.bin", payload(5000), mtime=EPOCH)
        fs.remove("/dir/A LONG FILE NAME.BIN")
        fs.remove("/dir")
        assert fs.free_bytes == free_before
        assert not fs.exists("/dir")
    fsck_clean(image)
    assert mdir_names(image) == []


def test_remove_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    with FileReadWriter(make_fat(tmp_path, 16)) as io:
        fs = FatFilesystem(io)
        fs.makedirs("/a")
        fs.write_file("/a/b", b"x", mtime=EPOCH)
        with pytest.raises(ImageError) as err:
            fs.remove("/a")
    assert err.value.problem == "not_empty"


@pytest.mark.parametrize("bits", BITS)
def test_directory_grows_past_its_first_cluster(tmp_path: Path, bits: int) -> None:
    image = make_fat(tmp_path, bits)
    names = [f"connection file number {i:03d}.nmconnection" for i in range(70)]
    with FileReadWriter(image) as io:
        fs = FatFilesystem(io)
        fs.makedirs("/system-connections")
        for i, name in enumerate(names):
            fs.write_file(f"/system-connections/{name}", payload(i), mtime=EPOCH)
    fsck_clean(image)
    assert mdir_names(image, "/system-connections") == names
    assert mtools_read(image, f"/system-connections/{names[-1]}") == payload(69)


def test_full_fixed_root_directory_is_no_space(tmp_path: Path) -> None:
    image = make_fat(tmp_path, 16, extra=("-r", "16"))
    with FileReadWriter(image) as io:
        fs = FatFilesystem(io)
        slots = fs.geometry.root_entries
        for i in range(slots - 1):  # the volume label entry takes one slot
            fs.write_file(f"/F{i}", b"x", mtime=EPOCH)
        with pytest.raises(ImageError) as err:
            fs.write_file("/ONEMORE", b"x", mtime=EPOCH)
    assert err.value.problem == "no_space"
    fsck_clean(image)


@pytest.mark.parametrize("bits", BITS)
def test_filling_the_volume_then_no_space_leaves_the_image_unchanged(
    tmp_path: Path, bits: int
) -> None:
    image = make_fat(tmp_path, bits)
    with FileReadWriter(image) as io:
        fs = FatFilesystem(io)
        fs.write_file("/big.bin", payload(fs.free_bytes - 3 * fs.cluster_size), mtime=EPOCH)
        snapshot = image.read_bytes()
        with pytest.raises(ImageError) as err:
            fs.write_file("/more.bin", payload(4 * fs.cluster_size), mtime=EPOCH)
        assert err.value.problem == "no_space"
        assert image.read_bytes() == snapshot
        fs.write_file("/last.bin", payload(3 * fs.cluster_size - 1), mtime=EPOCH)
        assert fs.free_bytes == 0
    fsck_clean(image)
    assert mtools_read(image, "/last.bin") == payload(3 * GEOMETRY[bits][1] * 512 - 1)


@pytest.mark.parametrize("bits", BITS)
def test_same_operations_give_identical_bytes(tmp_path: Path, bits: int) -> None:
    base = make_fat(tmp_path, bits)
    images = []
    for run in ("a", "b"):
        image = tmp_path / f"{run}.img"
        shutil.copyfile(base, image)
        with FileReadWriter(image) as io:
            fs = FatFilesystem(io)
            fs.makedirs("/system-connections", mtime=EPOCH)
            fs.write_file("/config.json", payload(3000), mtime=EPOCH)
            fs.write_file("/system-connections/resin-wifi", payload(40), mtime=EPOCH)
            fs.write_file("/config.json", payload(900, 5), mtime=EPOCH + 7)
        images.append(image.read_bytes())
    assert images[0] == images[1]


def _changed_sectors(before: bytes, after: bytes) -> set[int]:
    return {
        i // 512 for i in range(0, len(before), 512) if before[i : i + 512] != after[i : i + 512]
    }


@pytest.mark.parametrize("bits", BITS)
def test_new_file_changes_only_fat_directory_and_file_sectors(tmp_path: Path, bits: int) -> None:
    image = make_fat(tmp_path, bits)
    for i in range(5):
        mtools_write(image, f"/existing{i}.dat", payload(3000, i), tmp_path)
    before = image.read_bytes()
    with FileReadWriter(image) as io:
        fs = FatFilesystem(io)
        fs.write_file("/config.json", payload(1500, 9), mtime=EPOCH)
        geo = fs.geometry
    after = image.read_bytes()
    changed = _changed_sectors(before, after)
    fat_start = geo.reserved_sectors
    fat_sectors = {s for s in changed if fat_start <= s < fat_start + 2 * geo.fat_sectors}
    first_copy = {s - fat_start for s in fat_sectors if s < fat_start + geo.fat_sectors}
    second_copy = {
        s - fat_start - geo.fat_sectors for s in fat_sectors if s >= fat_start + geo.fat_sectors
    }
    assert first_copy and second_copy == first_copy and len(first_copy) <= 2
    assert (
        after[geo.fat_offset : geo.fat_offset + geo.fat_bytes]
        == after[geo.fat_offset + geo.fat_bytes : geo.fat_offset + 2 * geo.fat_bytes]
    )
    file_clusters = -(-1500 // geo.cluster_size)
    data_sectors = {s for s in changed if s * 512 >= geo.data_offset}
    other = changed - fat_sectors - data_sectors
    if bits == 32:
        assert other == {geo.fsinfo_sector}
        allowed_data = file_clusters + 1  # plus the root directory's cluster
    else:
        assert other and all(geo.root_offset <= s * 512 < geo.data_offset for s in other)
        allowed_data = file_clusters
    assert len(data_sectors) <= allowed_data * geo.sectors_per_cluster


@pytest.mark.parametrize("bits", BITS)
def test_unsynchronised_second_fat_is_repaired_on_write(tmp_path: Path, bits: int) -> None:
    image = make_fat(tmp_path, bits)
    mtools_write(image, "/config.json", payload(5000), tmp_path)
    with FileReadWriter(image) as io:
        geo = FatFilesystem(io).geometry
        io.pwrite(bytes(geo.sector_size), geo.fat_offset + geo.fat_bytes)  # what balena CLI does
    assert (
        "differ"
        in subprocess.run(["fsck.fat", "-n", str(image)], capture_output=True, text=True).stdout
    )
    with FileReadWriter(image) as io:
        FatFilesystem(io).write_file("/new.txt", b"x", mtime=EPOCH)
    fsck_clean(image)


@pytest.mark.parametrize("bits", BITS)
def test_allocated_ranges_cover_metadata_and_used_clusters(tmp_path: Path, bits: int) -> None:
    image = make_fat(tmp_path, bits)
    with FileReadWriter(image) as io:
        fs = FatFilesystem(io)
        fs.write_file("/a.bin", payload(2 * fs.cluster_size), mtime=EPOCH)
        fs.write_file("/b.bin", payload(fs.cluster_size), mtime=EPOCH)
        fs.remove("/a.bin")
        ranges = fs.allocated_ranges()
        geo = fs.geometry
    b_offset = geo.cluster_offset(4 if bits != 32 else 5)
    root_clusters = 1 if bits == 32 else 0
    assert ranges[0] == (0, geo.data_offset + root_clusters * geo.cluster_size)
    assert ranges[1:] == [(b_offset, geo.cluster_size)]
    assert image.read_bytes()[b_offset : b_offset + 16] == payload(16)


@pytest.mark.parametrize("bits", BITS)
def test_allocated_ranges_follow_runs_of_clusters_to_the_volume_end(
    tmp_path: Path, bits: int
) -> None:
    image = make_fat(tmp_path, bits)
    with FileReadWriter(image) as io:
        fs = FatFilesystem(io)
        size = fs.cluster_size
        fs.write_file("/a.bin", payload(2 * size), mtime=EPOCH)
        fs.write_file("/b.bin", payload(3 * size), mtime=EPOCH)
        fs.write_file("/c.bin", payload(fs.free_bytes), mtime=EPOCH)  # the rest of it
        fs.remove("/b.bin")  # a hole of three clusters between two runs
        ranges = fs.allocated_ranges()
        geo = fs.geometry
    first = 3 if bits == 32 else 2  # FAT32 keeps its root directory in cluster 2
    data_end = geo.cluster_offset(geo.max_cluster + 1)
    assert ranges == [
        (0, geo.cluster_offset(first + 2)),
        (geo.cluster_offset(first + 5), data_end - geo.cluster_offset(first + 5)),
    ]
