"""Synthesized sandbox images and the pure-Python ext4 writer, checked with the real tools
(sfdisk, fsck.fat, mtools, e2fsck, debugfs)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from flasher.image.byteio import FileReadWriter
from flasher.sandbox.catalog import load_catalog
from flasher.sandbox.ext4 import Ext4Builder
from flasher.sandbox.images import ImageLayout, ImageScale, ImageSpec, PartitionInfo, synthesize

CATALOG = load_catalog()
SCALE = ImageScale.tiny()
MiB = 1024 * 1024


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")


def spec_for(slug: str, version: str, image_type: str = "raw", dev: bool = False) -> ImageSpec:
    dt = CATALOG.device_type(slug)
    release = CATALOG.os_release(slug, version)
    assert dt is not None and release is not None
    return ImageSpec(dt, release, image_type, dev)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extract(image: Path, part: PartitionInfo, dest: Path) -> Path:
    with image.open("rb") as src:
        src.seek(part.start_bytes)
        dest.write_bytes(src.read(part.size_bytes))
    return dest


def e2fsck(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["e2fsck", "-fn", str(path)], capture_output=True, text=True)


def debugfs(path: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(path)], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


SPECS = {
    "rpi4-raw": ("raspberrypi4-64", "6.5.50+rev8", "raw"),
    "amd64-flasher": ("generic-amd64", "6.8.1", "flasher"),
    "bbb-flasher": ("beaglebone-black", "6.1.24", "flasher"),
    "amd64-raw": ("generic-amd64", "6.8.1", "raw"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, ImageLayout]]:
    root = tmp_path_factory.mktemp("sandbox-images")
    cache: dict[str, tuple[Path, ImageLayout]] = {}

    def get(name: str) -> tuple[Path, ImageLayout]:
        if name not in cache:
            path = root / f"{name}.img"
            cache[name] = (path, synthesize(path, spec_for(*SPECS[name]), SCALE))
        return cache[name]

    return get


# -- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rpi4-raw", "amd64-flasher"])
def test_same_parameters_give_the_same_bytes(
    built: Callable[[str], tuple[Path, ImageLayout]], name: str, tmp_path: Path
) -> None:
    first, _layout = built(name)
    again = tmp_path / "again.img"
    synthesize(again, spec_for(*SPECS[name]), SCALE)
    assert sha256(again) == sha256(first)


def test_dev_mode_changes_only_what_it_should(tmp_path: Path) -> None:
    prod, dev = tmp_path / "prod.img", tmp_path / "dev.img"
    synthesize(prod, spec_for("raspberrypi4-64", "6.5.50+rev8"), SCALE)
    synthesize(dev, spec_for("raspberrypi4-64", "6.5.50+rev8", dev=True), SCALE)
    assert sha256(prod) != sha256(dev)


@pytest.mark.parametrize(
    ("name", "label", "expected"),
    [
        ("rpi4-raw", "dos", [("e", "bootable"), ("83", None), ("83", None), ("f", None),
                             ("83", None), ("83", None)]),
        ("amd64-raw", "gpt", [("resin-boot", None), ("resin-rootA", None), ("resin-rootB", None),
                              ("resin-state", None), ("resin-data", None)]),
        ("amd64-flasher", "gpt", [("flash-boot", None), ("flash-rootA", None),
                                  ("flash-rootB", None)]),
        ("bbb-flasher", "dos", [("e", "bootable"), ("83", None), ("83", None)]),
    ],
)  # fmt: skip
def test_partition_table_parses_with_sfdisk(
    built: Callable[[str], tuple[Path, ImageLayout]],
    name: str,
    label: str,
    expected: list[tuple[str, str | None]],
) -> None:
    need("sfdisk")
    path, layout = built(name)
    dump = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(path)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    assert dump["label"] == label
    parts = dump["partitions"]
    if label == "dos":
        assert [(p["type"], "bootable" if p.get("bootable") else None) for p in parts] == expected
    else:
        assert [(p["name"], None) for p in parts] == expected
    data = [p for p in parts if p["type"] != "f"]
    assert [(p["start"] * 512, p["size"] * 512) for p in data] == [
        (p.start_bytes, p.size_bytes) for p in layout.partitions
    ]


@pytest.mark.parametrize("name", ["rpi4-raw", "amd64-flasher"])
def test_boot_partition_is_clean_fat16(
    built: Callable[[str], tuple[Path, ImageLayout]], name: str, tmp_path: Path
) -> None:
    need("fsck.fat")
    path, layout = built(name)
    boot = extract(path, layout.boot, tmp_path / "boot.fat")
    result = subprocess.run(["fsck.fat", "-n", str(boot)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Free cluster summary wrong" not in result.stdout


@pytest.mark.parametrize(
    ("name", "label", "flag_file"),
    [("rpi4-raw", "resin-boot", "balena-image"),
     ("amd64-flasher", "flash-boot", "balena-image-flasher")],
)  # fmt: skip
def test_mtools_reads_the_boot_files(
    built: Callable[[str], tuple[Path, ImageLayout]], name: str, label: str, flag_file: str
) -> None:
    need("mtype")
    path, layout = built(name)
    target = f"{path}@@{layout.boot.start_bytes}"

    def mtype(file: str) -> str:
        return subprocess.run(["mtype", "-i", target, f"::/{file}"], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip

    slug, version, _kind = SPECS[name]
    manifest = json.loads(mtype("device-type.json"))
    assert (manifest["slug"], manifest["configuration"]["config"]["path"]) == (slug, "/config.json")
    assert [group["name"] for group in manifest["options"]] == ["network", "advanced"]
    assert "buildId" not in manifest
    assert f'VERSION="{version}"' in mtype("os-release")
    assert json.loads(mtype("config.json")) == {"deviceType": slug, "persistentLogging": False}
    assert "ssid=" in mtype("system-connections/balena-sample.ignore")
    listing = subprocess.run(["mdir", "-b", "-i", target, "::/"], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert f"::/{flag_file}" in listing.split()
    volume = subprocess.run(["mlabel", "-s", "-i", target, "::"], capture_output=True, text=True)
    assert label in volume.stdout


@pytest.mark.parametrize("name", ["rpi4-raw", "amd64-flasher", "bbb-flasher"])
def test_ext4_partitions_pass_e2fsck(
    built: Callable[[str], tuple[Path, ImageLayout]], name: str, tmp_path: Path
) -> None:
    need("e2fsck")
    path, layout = built(name)
    for part in layout.partitions[1:]:
        fs = extract(path, part, tmp_path / f"{part.label}.ext4")
        result = e2fsck(fs)
        assert result.returncode == 0, f"{part.label}: {result.stdout}{result.stderr}"


def test_root_holds_os_release_and_flasher_holds_the_raw_image(
    built: Callable[[str], tuple[Path, ImageLayout]], tmp_path: Path
) -> None:
    need("debugfs")
    path, layout = built("amd64-flasher")
    root = extract(path, layout.partitions[1], tmp_path / "rootA.ext4")
    assert 'VERSION="6.8.1"' in debugfs(root, "cat /etc/os-release")
    inner = tmp_path / "inner.img"
    debugfs(root, f"dump /opt/balena-image-generic-amd64.balenaos-img {inner}")
    raw, _layout = built("amd64-raw")
    assert sha256(inner) == sha256(raw)


# -- ext4 writer ---------------------------------------------------------------------------------


def build_fs(path: Path, size: int, *, journal: int = 0) -> dict[str, bytes]:
    files = {
        "etc/os-release": b'NAME="balenaOS"\n',
        "usr/lib/random.bin": random.Random(3).randbytes(3 * MiB + 123),
        "empty.txt": b"",
    }
    sparse = bytearray(24 * MiB)
    for offset in range(0, len(sparse), MiB):  # 24 separate runs: a depth-1 extent tree
        sparse[offset : offset + 7] = b"payload"
    files["opt/sparse.img"] = bytes(sparse)
    files.update({f"var/many/{i:04d}.txt": f"{i}\n".encode() for i in range(400)})
    with path.open("wb") as f:
        f.truncate(size)
    builder = Ext4Builder(size, label="test-fs", uuid=bytes(range(16)), mtime=1_700_000_000,
                          journal_blocks=journal)  # fmt: skip
    for name, data in files.items():
        builder.add_file(name, data)
    builder.add_symlink("etc/mtab", "/proc/mounts")
    builder.add_dir("mnt/empty")
    with FileReadWriter(path) as io:
        builder.write(io)
    return files


@pytest.mark.parametrize(
    ("size", "journal"), [(48 * MiB, 0), (200 * MiB, 1024), (300 * MiB, 0)],
    ids=["one-group", "journal-two-groups", "three-groups"],
)  # fmt: skip
def test_ext4_writer_output_is_clean_for_e2fsck(tmp_path: Path, size: int, journal: int) -> None:
    need("e2fsck")
    path = tmp_path / "fs.ext4"
    build_fs(path, size, journal=journal)
    result = e2fsck(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ext4_files_read_back_through_debugfs(tmp_path: Path) -> None:
    need("debugfs")
    path = tmp_path / "fs.ext4"
    files = build_fs(path, 64 * MiB)
    for name in ("usr/lib/random.bin", "opt/sparse.img", "var/many/0399.txt", "empty.txt"):
        out = tmp_path / "out.bin"
        debugfs(path, f"dump /{name} {out}")
        assert out.read_bytes() == files[name], name
    assert "/proc/mounts" in debugfs(path, "stat /etc/mtab")


def test_ext4_sparse_file_stores_only_its_data(tmp_path: Path) -> None:
    need("debugfs")
    path = tmp_path / "fs.ext4"
    build_fs(path, 64 * MiB)
    stat = debugfs(path, "stat /opt/sparse.img")
    # 24 data blocks plus one extent leaf, in 512-byte units
    assert "Blockcount: 200" in stat


def test_ext4_has_the_requested_label_uuid_and_features(tmp_path: Path) -> None:
    need("dumpe2fs")
    path = tmp_path / "fs.ext4"
    build_fs(path, 200 * MiB, journal=1024)
    header = subprocess.run(["dumpe2fs", "-h", str(path)], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    assert "Filesystem volume name:   test-fs" in header
    assert "Filesystem UUID:          00010203-0405-0607-0809-0a0b0c0d0e0f" in header
    features = next(line for line in header.splitlines() if line.startswith("Filesystem features"))
    assert set(features.split(":")[1].split()) == {
        "has_journal", "filetype", "extent", "sparse_super", "large_file", "dir_nlink",
        "extra_isize",
    }  # fmt: skip


def test_ext4_writer_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.ext4", tmp_path / "b.ext4"
    build_fs(a, 48 * MiB)
    build_fs(b, 48 * MiB)
    assert sha256(a) == sha256(b)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda b: b.add_symlink("x", "y" * 60), "fast symlinks"),
        (lambda b: (b.add_file("a", b"1"), b.add_file("a", b"2")), "already exists"),
        (lambda b: (b.add_file("a", b"1"), b.add_file("a/b", b"2")), "not a directory"),
    ],
)
def test_ext4_builder_rejects_bad_trees(
    action: Callable[[Ext4Builder], object], message: str
) -> None:
    builder = Ext4Builder(8 * MiB, label="x", uuid=bytes(16), mtime=0)
    with pytest.raises(ValueError, match=message):
        action(builder)


def test_ext4_builder_rejects_content_that_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "small.ext4"
    with path.open("wb") as f:
        f.truncate(2 * MiB)
    builder = Ext4Builder(2 * MiB, label="small", uuid=bytes(16), mtime=0)
    builder.add_file("big.bin", random.Random(1).randbytes(3 * MiB))
    with FileReadWriter(path) as io, pytest.raises(ValueError, match="do not fit"):
        builder.write(io)
