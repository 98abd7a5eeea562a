"""inspect_image on real images: partitions, boot partition, identity, redacted config.json,
keyfiles and allocation, for raw and compressed sources; problems reported, not raised."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from flasher.errors import ImageError
from flasher.image.configure import prepare_image
from flasher.image.inspection import inspect_image, parse_os_release
from flasher.models import DeviceConfig, NetworkKind, NetworkSettings, Secret
from tests.support.images import BuiltImage, copy_image

ImageFactory = Callable[..., BuiltImage]
CompressedFactory = Callable[[Path, str], Path]
MiB = 1024 * 1024

API_KEY = "Xq3mVb9Lr2TzKp7WnY4sHd8cFj1GaE6u"
WIFI_KEY = "correct horse battery"


@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
def test_partitions_match_the_built_layout(image_factory: ImageFactory, scheme: str) -> None:
    image = image_factory(scheme=scheme)
    info = inspect_image(image.path)
    assert info.scheme == scheme
    assert info.size_bytes == image.size_bytes
    got = [
        (p.number, p.start_bytes, p.size_bytes, p.filesystem, p.label, p.name)
        for p in info.partitions
    ]
    want = [
        (p.number, p.start_bytes, p.size_bytes, p.fs, "" if p.fs == "extended" else p.label, p.name)
        for p in image.partitions
    ]
    assert got == want
    assert [p.is_boot for p in info.partitions] == [p.number == 1 for p in image.partitions]
    assert info.boot_partition == 1


def test_identity_config_and_keyfiles_come_from_the_boot_partition(
    mbr_image: ImageFactory,
) -> None:
    image = mbr_image(os_version="6.1.24+rev3")
    info = inspect_image(image.path)
    assert info.identity.device_type == "raspberrypi4-64"
    assert info.identity.device_type_name == "Raspberry Pi 4 (using 64bit OS)"
    assert (info.identity.os_version, info.identity.variant) == ("6.1.24+rev3", "prod")
    assert info.identity.meta_balena_version == "6.1.24"
    assert not info.identity.installer
    assert info.config == json.loads(image.boot_files["config.json"])
    assert info.keyfiles == ("README.ignore", "balena-sample.ignore")
    assert info.problems == ()
    assert info.source_kind == "raw" and not info.unpacked


def test_installer_images_are_recognised(mbr_image: ImageFactory) -> None:
    info = inspect_image(mbr_image(boot_label="flash-boot", flasher=True).path)
    assert info.identity.installer
    assert info.partitions[0].label == "flash-boot"


def test_allocation_counts_data_not_free_space(mbr_image: ImageFactory) -> None:
    image = mbr_image()
    info = inspect_image(image.path)
    assert 0 < info.mapped_bytes < image.size_bytes
    assert info.allocation_source == "filesystems"
    assert info.to_dict()["allocation"]["mapped_percent"] == round(
        100 * info.mapped_bytes / image.size_bytes, 1
    )


def test_secrets_never_appear_in_the_report(mbr_image: ImageFactory, tmp_path: Path) -> None:
    image = mbr_image()
    cfg = DeviceConfig(
        device_type="raspberrypi4-64",
        network=NetworkSettings(NetworkKind.WIFI, wifi_ssid="Office", wifi_key=Secret(WIFI_KEY)),
        base_config={"applicationId": 1958513, "deviceType": "raspberrypi4-64", "apiKey": API_KEY},
    )
    out = tmp_path / "configured.img"
    with prepare_image(image.path, cfg) as prepared:
        prepared.overlay.write_to(out)
    info = inspect_image(out)
    assert info.config is not None
    assert info.config["apiKey"] == "***"
    assert info.config["applicationId"] == 1958513
    assert "resin-wifi" in info.keyfiles
    dumped = json.dumps(info.to_dict()) + repr(info)
    assert API_KEY not in dumped
    assert WIFI_KEY not in dumped


@pytest.mark.parametrize("kind", ["gz", "xz", "zst", "bz2", "zip"])
def test_compressed_images_report_what_the_raw_image_reports(
    mbr_image: ImageFactory, compressed_image: CompressedFactory, tmp_path: Path, kind: str
) -> None:
    image = mbr_image()
    raw = inspect_image(image.path).to_dict()
    packed_path = compressed_image(image.path, kind)
    packed = inspect_image(packed_path, work_dir=tmp_path).to_dict()
    assert packed["source_kind"] == kind
    assert packed["unpacked"] is True
    if kind == "zip":  # the member's compressed bytes, without the archive's headers
        assert 0 < packed["file_size_bytes"] < os.path.getsize(packed_path)
    else:
        assert packed["file_size_bytes"] == os.path.getsize(packed_path)
    for key in ("path", "source_kind", "file_size_bytes", "unpacked"):
        raw.pop(key)
        packed.pop(key)
    assert packed == raw
    assert list(tmp_path.iterdir()) == []  # the unpacked copy is gone


def test_missing_config_json_is_a_problem_not_an_error(mbr_image: ImageFactory) -> None:
    info = inspect_image(mbr_image(boot_files={"config.json": None}).path)
    assert info.config is None
    assert [p.code for p in info.problems] == ["no_config_json"]
    assert info.problems[0].hint


def test_an_image_without_a_boot_filesystem_is_described(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(2 * MiB))
    info = inspect_image(blank)
    assert info.scheme == "none"
    assert info.boot_partition is None
    assert [p.code for p in info.problems] == ["boot_not_fat"]


def test_a_broken_manifest_is_a_problem(mbr_image: ImageFactory) -> None:
    info = inspect_image(mbr_image(boot_files={"device-type.json": b"{not json"}).path)
    assert [p.code for p in info.problems] == ["bad_manifest"]
    assert "device-type.json" in info.problems[0].message


def test_truncated_image_raises(mbr_image: ImageFactory, tmp_path: Path) -> None:
    image = copy_image(mbr_image(), tmp_path / "cut")
    os.truncate(image.path, image.boot_offset + MiB)
    with pytest.raises(ImageError):
        inspect_image(image.path)


def test_truncated_compressed_image_raises(
    mbr_image: ImageFactory, compressed_image: CompressedFactory, tmp_path: Path
) -> None:
    packed = compressed_image(mbr_image().path, "gz")
    cut = tmp_path / "cut.img.gz"
    cut.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    with pytest.raises(ImageError) as err:
        inspect_image(cut, work_dir=tmp_path)
    assert err.value.problem == "truncated"
    assert list(tmp_path.iterdir()) == [cut]  # no unpacked leftovers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'VERSION="6.5.50+rev8"\n', {"VERSION": "6.5.50+rev8"}),
        (b"VARIANT_ID=prod\n# comment\n\njunk line\n", {"VARIANT_ID": "prod"}),
        (b'NAME=\'balenaOS\'\nA="x\\"y"\n', {"NAME": "balenaOS", "A": 'x"y'}),
    ],
)
def test_os_release_lines_are_parsed(text: bytes, expected: dict[str, str]) -> None:
    assert parse_os_release(text) == expected
