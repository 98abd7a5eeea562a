"""The test image builder makes what it promises, checked with the real tools (sfdisk, fsck)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ImageFactory
from tests.support.images import build_image, require_tools


def _extract(image: Path, start: int, size: int, dest: Path) -> Path:
    with open(image, "rb") as src, open(dest, "wb") as out:
        src.seek(start)
        out.write(src.read(size))
    return dest


@pytest.mark.parametrize(
    ("scheme", "fat_bits", "numbers", "boot_type"),
    [
        ("mbr", 16, [1, 2, 3, 4, 5, 6], "c"),
        ("mbr", 12, [1, 2, 3, 4, 5, 6], "c"),
        ("gpt", 32, [1, 2, 3, 4, 5], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
    ],
)
def test_the_partition_table_matches_the_balena_layout(
    image_factory: ImageFactory, scheme: str, fat_bits: int, numbers: list[int], boot_type: str
) -> None:
    require_tools("sfdisk")
    image = image_factory(scheme=scheme, fat_bits=fat_bits)
    table = json.loads(
        subprocess.run(["sfdisk", "-J", str(image.path)], capture_output=True, check=True).stdout
    )["partitiontable"]
    parts = table["partitions"]
    assert table["label"] == ("gpt" if scheme == "gpt" else "dos")
    assert [int(p["node"].rsplit("img", 1)[1]) for p in parts] == numbers
    assert parts[0]["type"] == boot_type and all(p["start"] % 8192 == 0 for p in parts)
    for part, built in zip(parts, image.partitions, strict=True):
        assert (part["start"] * 512, part["size"] * 512) == (built.start_bytes, built.size_bytes)
    if scheme == "gpt":
        assert [p["name"] for p in parts] == [
            "resin-boot",
            "resin-rootA",
            "resin-rootB",
            "resin-state",
            "resin-data",
        ]
    else:
        assert parts[0].get("bootable") is True and parts[3]["type"] == "f"


@pytest.mark.parametrize("fat_bits", [12, 16, 32])
def test_the_boot_partition_is_a_clean_fat_with_the_balena_files(
    image_factory: ImageFactory, fat_bits: int, tmp_path: Path
) -> None:
    require_tools("fsck.fat", "mtype", "mdir")
    image = image_factory(fat_bits=fat_bits, device_type="raspberrypi3", os_version="5.1.20")
    boot = _extract(image.path, image.boot_offset, image.boot_size, tmp_path / "boot.vfat")
    check = subprocess.run(["fsck.fat", "-n", str(boot)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fs_type = boot.read_bytes()[0x52:0x5A] if fat_bits == 32 else boot.read_bytes()[0x36:0x3E]
    assert fs_type == f"FAT{fat_bits}".encode().ljust(8)
    config = subprocess.run(
        ["mtype", "-i", str(boot), "::/config.json"], capture_output=True, check=True
    ).stdout
    assert json.loads(config) == {"deviceType": "raspberrypi3", "persistentLogging": False}
    release = subprocess.run(
        ["mtype", "-i", str(boot), "::/os-release"], capture_output=True, check=True, text=True
    ).stdout
    assert 'VERSION="5.1.20"' in release and 'SLUG="raspberrypi3"' in release
    listing = subprocess.run(
        ["mdir", "-b", "-i", str(boot), "::/system-connections"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    assert "balena-sample.ignore" in listing and "README.ignore" in listing
    manifest = json.loads(image.boot_files["device-type.json"])
    assert manifest["configuration"]["config"]["partition"] == {"primary": 1}
    assert manifest["options"][0]["name"] == "network" and "yocto" in manifest


def test_the_ext4_partitions_are_clean_and_labelled(
    image_factory: ImageFactory, tmp_path: Path
) -> None:
    require_tools("e2fsck", "blkid")
    image = image_factory()
    for part in image.partitions:
        if part.fs != "ext4":
            continue
        fs = _extract(image.path, part.start_bytes, part.size_bytes, tmp_path / part.label)
        check = subprocess.run(["e2fsck", "-fn", str(fs)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
        label = subprocess.run(
            ["blkid", "-p", "-s", "LABEL", "-o", "value", str(fs)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert label == part.label


@pytest.mark.parametrize("boot_label", ["balena-boot", "flash-boot", None])
def test_boot_labels_follow_the_option(
    image_factory: ImageFactory, boot_label: str | None, tmp_path: Path
) -> None:
    require_tools("blkid")
    image = image_factory(boot_label=boot_label)
    boot = _extract(image.path, image.boot_offset, image.boot_size, tmp_path / "boot")
    label = subprocess.run(
        ["blkid", "-p", "-s", "LABEL", "-o", "value", str(boot)], capture_output=True, text=True
    ).stdout.strip()
    assert label == (boot_label or "")


def test_the_same_options_build_the_same_bytes(tmp_path: Path) -> None:
    first = build_image(tmp_path / "a", scheme="gpt", root_fill_bytes=512 * 1024)
    time.sleep(1.1)  # file times have whole seconds: a later build must not differ
    second = build_image(tmp_path / "b", scheme="gpt", root_fill_bytes=512 * 1024)
    digests = {hashlib.sha256(i.path.read_bytes()).hexdigest() for i in (first, second)}
    assert len(digests) == 1
    other_seed = build_image(tmp_path / "c", scheme="gpt", root_fill_bytes=512 * 1024, seed=2)
    assert hashlib.sha256(other_seed.path.read_bytes()).hexdigest() not in digests


def test_images_are_sparse(image_factory: ImageFactory) -> None:
    image = image_factory()
    assert image.path.stat().st_blocks * 512 < image.size_bytes // 4
