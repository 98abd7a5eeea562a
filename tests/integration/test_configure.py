"""prepare_image on real balenaOS-layout images: the boot FAT stays valid for fsck.fat, mtools reads
back exactly the rendered files, nothing outside the boot partition changes, the cached base is
never modified, and the same inputs always give the same bytes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from flasher.errors import ConfigError, ImageError
from flasher.image.byteio import FileReadWriter
from flasher.image.configure import prepare_image
from flasher.image.network import render_keyfiles
from flasher.models import DeviceConfig, Keyfile, NetworkKind, NetworkSettings, Secret, StaticIPv4
from tests.support.bootcheck import (
    file_sha256,
    fsck_boot,
    mdir_names,
    mtype,
    outside_sha256,
    region_sha256,
)
from tests.support.filesystems import require, run
from tests.support.images import BuiltImage, copy_image

ImageFactory = Callable[..., BuiltImage]
MiB = 1024 * 1024

WIFI = DeviceConfig(
    device_type="raspberrypi4-64",
    network=NetworkSettings(
        NetworkKind.WIFI, wifi_ssid="My Home Net", wifi_key=Secret("s3cret pass")
    ),
    hostname="bench01",
)
STATIC = DeviceConfig(
    device_type="raspberrypi4-64",
    network=NetworkSettings(
        ipv4=StaticIPv4("192.168.1.50", "255.255.255.0", "192.168.1.1", ("1.1.1.1",))
    ),
    poll_interval_min=30,
    extra_keyfiles=(
        Keyfile("cellular-extra", b"[connection]\nid=cellular-extra\ntype=gsm\n\n[gsm]\napn=iot\n"),
    ),
)
# What the pristine image's {"deviceType": ..., "persistentLogging": false} becomes.
WIFI_CONFIG_JSON = (
    b'{"deviceType":"raspberrypi4-64","persistentLogging":false,"hostname":"bench01"}'
)
STATIC_CONFIG_JSON = (
    b'{"deviceType":"raspberrypi4-64","persistentLogging":false,"appUpdatePollInterval":1800000}'
)


def _configured_copy(image: BuiltImage, cfg: DeviceConfig, out: Path) -> Path:
    with prepare_image(image.path, cfg) as prepared:
        prepared.overlay.write_to(out)
    return out


@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
@pytest.mark.parametrize("boot_label", ["resin-boot", "balena-boot", "flash-boot"])
def test_boot_partition_passes_fsck_and_holds_the_rendered_files(
    image_factory: ImageFactory, tmp_path: Path, scheme: str, boot_label: str
) -> None:
    image = image_factory(scheme=scheme, boot_label=boot_label)
    out = _configured_copy(image, WIFI, tmp_path / "out.img")
    fsck_boot(out, image.boot_offset, image.boot_size, tmp_path)
    assert mtype(out, image.boot_offset, "/config.json") == WIFI_CONFIG_JSON
    [wifi] = render_keyfiles(WIFI)
    assert mtype(out, image.boot_offset, f"/system-connections/{wifi.name}") == wifi.content


@pytest.mark.parametrize("fat_bits", [12, 16, 32])
def test_every_fat_type_is_configured_cleanly(
    mbr_image: ImageFactory, tmp_path: Path, fat_bits: int
) -> None:
    image = mbr_image(fat_bits=fat_bits)
    out = _configured_copy(image, STATIC, tmp_path / "out.img")
    fsck_boot(out, image.boot_offset, image.boot_size, tmp_path)
    assert mtype(out, image.boot_offset, "/config.json") == STATIC_CONFIG_JSON
    for keyfile in render_keyfiles(STATIC):
        assert mtype(out, image.boot_offset, f"/system-connections/{keyfile.name}") == (
            keyfile.content
        )


@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
def test_nothing_outside_the_boot_partition_changes(
    image_factory: ImageFactory, tmp_path: Path, scheme: str
) -> None:
    image = image_factory(scheme=scheme)
    out = _configured_copy(image, WIFI, tmp_path / "out.img")
    start, end = image.boot_offset, image.boot_offset + image.boot_size
    assert outside_sha256(out, start, end) == outside_sha256(image.path, start, end)
    assert region_sha256(out, start, end) != region_sha256(image.path, start, end)


def test_overlay_ranges_lie_inside_the_boot_partition(mbr_image: ImageFactory) -> None:
    image = mbr_image()
    with prepare_image(image.path, WIFI) as prepared:
        ranges = prepared.overlay.ranges()
    assert ranges
    for offset, length in ranges:
        assert image.boot_offset <= offset
        assert offset + length <= image.boot_offset + image.boot_size


def test_files_already_in_system_connections_are_kept(
    mbr_image: ImageFactory, tmp_path: Path
) -> None:
    image = mbr_image()
    out = _configured_copy(image, STATIC, tmp_path / "out.img")
    names = mdir_names(out, image.boot_offset, "/system-connections")
    assert names == sorted(
        ["README.ignore", "balena-sample.ignore", "balena-ethernet", "cellular-extra"]
    )
    sample = "system-connections/balena-sample.ignore"
    assert mtype(out, image.boot_offset, f"/{sample}") == image.boot_files[sample]


def test_system_connections_is_created_when_missing(
    mbr_image: ImageFactory, tmp_path: Path
) -> None:
    image = mbr_image(
        boot_files={
            "system-connections/README.ignore": None,
            "system-connections/balena-sample.ignore": None,
        }
    )
    assert "system-connections" not in mdir_names(image.path, image.boot_offset, "/")
    out = _configured_copy(image, WIFI, tmp_path / "out.img")
    fsck_boot(out, image.boot_offset, image.boot_size, tmp_path)
    [wifi] = render_keyfiles(WIFI)
    assert mtype(out, image.boot_offset, "/system-connections/resin-wifi") == wifi.content


def test_configuring_twice_gives_the_same_sha256(mbr_image: ImageFactory) -> None:
    image = mbr_image()
    with prepare_image(image.path, WIFI) as first, prepare_image(image.path, WIFI) as second:
        assert first.sha256() == second.sha256()
        assert first.overlay.ranges() == second.overlay.ranges()


def test_other_settings_give_another_sha256(mbr_image: ImageFactory) -> None:
    image = mbr_image()
    with prepare_image(image.path, WIFI) as a, prepare_image(image.path, STATIC) as b:
        assert a.sha256() != b.sha256()


def test_another_process_and_path_give_the_same_sha256(
    mbr_image: ImageFactory, tmp_path: Path
) -> None:
    image = mbr_image()
    elsewhere = copy_image(image, tmp_path / "elsewhere")
    script = (
        "import sys\n"
        "from flasher.image.configure import prepare_image\n"
        "from flasher.models import DeviceConfig, NetworkKind, NetworkSettings, Secret\n"
        "cfg = DeviceConfig(device_type='raspberrypi4-64', hostname='bench01',\n"
        "    network=NetworkSettings(NetworkKind.WIFI, wifi_ssid='My Home Net',\n"
        "                            wifi_key=Secret('s3cret pass')))\n"
        "with prepare_image(sys.argv[1], cfg) as p:\n"
        "    print(p.sha256())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(elsewhere.path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    with prepare_image(image.path, WIFI) as prepared:
        assert result.stdout.strip() == prepared.sha256()


@contextmanager
def _unwritable(path: Path) -> Iterator[None]:
    """Make `path` impossible to open for writing, for root too (chmod alone does not stop
    root, so root also sets the immutable attribute)."""
    os.chmod(path, 0o444)
    if os.geteuid() != 0:
        yield
        return
    require("chattr")
    run(["chattr", "+i", path])
    try:
        with pytest.raises(PermissionError):
            os.open(path, os.O_RDWR)
        yield
    finally:
        run(["chattr", "-i", path])


def test_the_base_image_is_never_modified(mbr_image: ImageFactory, tmp_path: Path) -> None:
    image = copy_image(mbr_image(), tmp_path / "base")
    before_hash, before = file_sha256(image.path), image.path.stat()
    with _unwritable(image.path), prepare_image(image.path, WIFI) as prepared:
        prepared.overlay.write_to(tmp_path / "out.img")
        prepared.sha256()
        prepared.allocation_map()
    after = image.path.stat()
    assert file_sha256(image.path) == before_hash
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    assert file_sha256(tmp_path / "out.img") != before_hash


def test_in_place_edit_and_written_copy_are_identical(
    mbr_image: ImageFactory, tmp_path: Path
) -> None:
    image = mbr_image()
    out = _configured_copy(image, WIFI, tmp_path / "out.img")
    edited = copy_image(image, tmp_path / "edited")
    with prepare_image(edited.path, WIFI) as prepared, FileReadWriter(edited.path) as rw:
        prepared.overlay.apply_in_place(rw)
    assert file_sha256(edited.path) == file_sha256(out)


def test_sha256_and_reader_match_the_written_image(mbr_image: ImageFactory, tmp_path: Path) -> None:
    image = mbr_image()
    with prepare_image(image.path, WIFI) as prepared:
        prepared.overlay.write_to(tmp_path / "out.img")
        digest = hashlib.sha256()
        with prepared.reader() as stream:
            while chunk := stream.read(MiB):
                digest.update(chunk)
        assert digest.hexdigest() == prepared.sha256() == file_sha256(tmp_path / "out.img")


def test_allocation_map_includes_every_changed_range(mbr_image: ImageFactory) -> None:
    image = mbr_image()
    with prepare_image(image.path, WIFI) as prepared:
        amap = prepared.allocation_map()
        changed = prepared.overlay.ranges()
    for offset, length in changed:
        assert amap.contains(offset)
        assert amap.contains(offset + length - 1)
    assert amap.mapped_bytes < image.size_bytes


def test_config_sha256_is_the_hash_of_the_written_config_json(mbr_image: ImageFactory) -> None:
    with prepare_image(mbr_image().path, WIFI) as prepared:
        assert prepared.config_sha256 == hashlib.sha256(WIFI_CONFIG_JSON).hexdigest()
        assert prepared.files_written == ("/config.json", "/system-connections/resin-wifi")


def test_identity_comes_from_the_image(mbr_image: ImageFactory) -> None:
    with prepare_image(mbr_image(os_version="6.1.24+rev3").path, WIFI) as prepared:
        assert (prepared.device_type, prepared.os_version, prepared.variant) == (
            "raspberrypi4-64",
            "6.1.24+rev3",
            "prod",
        )
        assert prepared.boot_partition.number == 1
        assert prepared.boot_label == "resin-boot"


def test_explicit_config_replaces_the_image_config(mbr_image: ImageFactory, tmp_path: Path) -> None:
    image = mbr_image()
    base = {
        "applicationId": 1958513,
        "deviceType": "raspberrypi4-64",
        "apiKey": "k3y",
        "listenPort": 48484,
    }
    out = _configured_copy(image, replace(WIFI, base_config=base), tmp_path / "out.img")
    written = json.loads(mtype(out, image.boot_offset, "/config.json"))
    assert written == {**base, "hostname": "bench01"}
    assert "persistentLogging" not in written


def test_a_broken_image_config_json_is_refused_unless_replaced(
    mbr_image: ImageFactory, tmp_path: Path
) -> None:
    image = mbr_image(boot_files={"config.json": b'{"deviceType": "raspb'})
    with pytest.raises(ImageError) as err:
        prepare_image(image.path, WIFI)
    assert err.value.problem == "bad_manifest"
    base = {"deviceType": "raspberrypi4-64"}
    out = _configured_copy(image, replace(WIFI, base_config=base), tmp_path / "out.img")
    assert mtype(out, image.boot_offset, "/config.json") == (
        b'{"deviceType":"raspberrypi4-64","hostname":"bench01"}'
    )


def test_image_settings_are_kept_and_device_identity_dropped(
    mbr_image: ImageFactory, tmp_path: Path
) -> None:
    provisioned = {
        "deviceType": "raspberrypi4-64",
        "persistentLogging": True,
        "country": "DE",
        "uuid": "7cf02a6f3c0a4b1e9d2c8a7b6e5d4c3b",
        "deviceApiKey": "d3v1ce",
        "deviceApiKeys": {"api.balena-cloud.com": "d3v1ce"},
        "deviceId": 7842821,
        "registered_at": 1723456789,
    }
    image = mbr_image(boot_files={"config.json": json.dumps(provisioned).encode()})
    out = _configured_copy(image, WIFI, tmp_path / "out.img")
    assert mtype(out, image.boot_offset, "/config.json") == (
        b'{"deviceType":"raspberrypi4-64","persistentLogging":true,"country":"DE",'
        b'"hostname":"bench01"}'
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("device_type", "fincm3"), ("os_version", "6.0.1+rev2")],
)
def test_settings_for_another_image_are_refused(
    mbr_image: ImageFactory, field: str, value: str
) -> None:
    with pytest.raises(ConfigError) as err:
        prepare_image(mbr_image().path, replace(WIFI, **{field: value}))
    assert err.value.field == field
    assert err.value.hint


@pytest.mark.parametrize("version", ["6.5.50+rev8", "v6.5.50+rev8", "6.5.50+rev8.prod"])
def test_spellings_of_the_image_version_are_accepted(mbr_image: ImageFactory, version: str) -> None:
    with prepare_image(mbr_image().path, replace(WIFI, os_version=version)) as prepared:
        assert prepared.os_version == "6.5.50+rev8"


def test_a_device_type_alias_is_accepted(mbr_image: ImageFactory) -> None:
    image = mbr_image()
    manifest = json.loads(image.boot_files["device-type.json"])
    manifest["aliases"] = ["raspberrypi4-64", "rpi4-legacy"]
    aliased = mbr_image(boot_files={"device-type.json": json.dumps(manifest).encode()})
    with prepare_image(aliased.path, replace(WIFI, device_type="rpi4-legacy")) as prepared:
        assert prepared.device_type == "raspberrypi4-64"


def test_invalid_settings_are_refused_before_the_image_is_opened(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        prepare_image(tmp_path / "missing.img", replace(WIFI, hostname="Not A Hostname"))
    assert err.value.field == "hostname"


def test_image_without_config_json_is_refused(mbr_image: ImageFactory) -> None:
    image = mbr_image(boot_files={"config.json": None})
    with pytest.raises(ImageError) as err:
        prepare_image(image.path, WIFI)
    assert err.value.problem == "no_config_json"
    assert err.value.hint


def test_image_without_a_fat_boot_partition_is_refused(tmp_path: Path) -> None:
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(4 * MiB))
    with pytest.raises(ImageError) as err:
        prepare_image(blank, WIFI)
    assert err.value.problem == "boot_not_fat"
    assert err.value.hint


def test_truncated_image_is_refused(mbr_image: ImageFactory, tmp_path: Path) -> None:
    image = copy_image(mbr_image(), tmp_path / "cut")
    os.truncate(image.path, image.boot_offset + 2 * MiB)
    with pytest.raises(ImageError):
        prepare_image(image.path, WIFI)


def test_corrupt_boot_filesystem_is_refused(mbr_image: ImageFactory, tmp_path: Path) -> None:
    image = copy_image(mbr_image(), tmp_path / "bad")
    with open(image.path, "r+b") as f:
        f.seek(image.boot_offset + 11)  # bytes per sector, sectors per cluster, ...
        f.write(b"\x00" * 8)
    with pytest.raises(ImageError):
        prepare_image(image.path, WIFI)


def test_missing_image_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as err:
        prepare_image(tmp_path / "missing.img", WIFI)
    assert err.value.problem == "unreadable"


def test_large_sparse_image_is_configured_without_copying(
    tmp_path: Path, mbr_image: ImageFactory
) -> None:
    image = mbr_image()
    big = copy_image(image, tmp_path / "big")
    os.truncate(big.path, 4 * 1024 * MiB)
    with prepare_image(big.path, WIFI) as prepared:
        assert prepared.size_bytes == 4 * 1024 * MiB
        assert prepared.overlay.overlay_bytes < MiB
        prepared.overlay.write_to(tmp_path / "out.img")
    out = tmp_path / "out.img"
    assert out.stat().st_size == 4 * 1024 * MiB
    assert out.stat().st_blocks * 512 < 200 * MiB  # the holes stayed holes
    assert mtype(out, image.boot_offset, "/config.json") == WIFI_CONFIG_JSON
