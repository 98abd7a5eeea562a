"""`flasher os configure` and `flasher image inspect` through the real command line entry point:
in-place edits, -o copies from every supported format, defaults read from the image, errors
with hints and exit codes, JSON output, and secrets kept out of everything printed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flasher.cli import main as cli_main
from flasher.image.network import WIFI_KEYFILE_NAME
from tests.support.bootcheck import file_sha256, fsck_boot, mtype
from tests.support.images import BuiltImage, copy_image

ImageFactory = Callable[..., BuiltImage]
CompressedFactory = Callable[[Path, str], Path]
REPO = Path(__file__).resolve().parents[2]

WIFI_KEY = "s3cret pass phrase"
API_KEY = "Xq3mVb9Lr2TzKp7WnY4sHd8cFj1GaE6u"
WIFI_ARGS = ["--wifi-ssid", "My Home Net", "--hostname", "bench01"]


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        """The result: the last line (progress events come before it as JSON lines)."""
        return json.loads(self.out.splitlines()[-1])


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Run]:
    """`cli(*argv) -> Run` through the real CLI root."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.delenv("FLASHER_PROVISIONING_KEY", raising=False)
    monkeypatch.delenv("BALENA_API_KEY", raising=False)
    # No saved `balena login` token from this machine.
    monkeypatch.setenv("BALENARC_DATA_DIRECTORY", str(tmp_path / "balenarc"))

    def run(*argv: str | os.PathLike[str]) -> Run:
        # The Wi-Fi key comes from the environment, as the help advises.
        if "--wifi-ssid" in argv:
            monkeypatch.setenv("FLASHER_WIFI_KEY", WIFI_KEY)
        else:
            monkeypatch.delenv("FLASHER_WIFI_KEY", raising=False)
        code = cli_main.main([os.fspath(a) for a in argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def test_in_place_edit_and_output_copy_are_identical(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    image = mbr_image()
    edited = copy_image(image, tmp_path / "edit")
    copy = cli("os", "configure", image.path, "-o", tmp_path / "out.img", *WIFI_ARGS)
    in_place = cli("os", "configure", edited.path, *WIFI_ARGS)
    assert (copy.code, in_place.code) == (0, 0), copy.err + in_place.err
    assert file_sha256(edited.path) == file_sha256(tmp_path / "out.img")
    fsck_boot(edited.path, image.boot_offset, image.boot_size, tmp_path)


@pytest.mark.parametrize("kind", ["gz", "xz", "zst", "bz2", "zip"])
def test_output_from_a_compressed_image_matches_the_raw_one(
    cli: Callable[..., Run],
    mbr_image: ImageFactory,
    compressed_image: CompressedFactory,
    tmp_path: Path,
    kind: str,
) -> None:
    image = mbr_image()
    packed = compressed_image(image.path, kind)
    from_raw = cli("--json", "os", "configure", image.path, "-o", tmp_path / "raw.img", *WIFI_ARGS)
    from_packed = cli(
        "--json", "os", "configure", packed, "-o", tmp_path / "packed.img", *WIFI_ARGS
    )
    assert (from_raw.code, from_packed.code) == (0, 0), from_packed.err
    assert file_sha256(tmp_path / "packed.img") == file_sha256(tmp_path / "raw.img")
    assert from_packed.json()["image_sha256"] == file_sha256(tmp_path / "raw.img")
    assert from_packed.json()["source_kind"] == kind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed.img", "raw.img"]


def test_compressed_input_needs_an_output(
    cli: Callable[..., Run], mbr_image: ImageFactory, compressed_image: CompressedFactory
) -> None:
    packed = compressed_image(mbr_image().path, "gz")
    before = file_sha256(packed)
    run = cli("os", "configure", packed, *WIFI_ARGS)
    assert run.code == 1
    assert "use -o OUTPUT" in run.err
    assert file_sha256(packed) == before


def test_device_type_and_version_default_to_the_image(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    image = mbr_image(device_type="fincm3", os_version="5.3.1+rev2")
    out = tmp_path / "out.img"
    run = cli("--json", "os", "configure", image.path, "-o", out)
    assert run.code == 0, run.err
    assert (run.json()["device_type"], run.json()["os_version"]) == ("fincm3", "5.3.1+rev2")
    assert json.loads(mtype(out, image.boot_offset, "/config.json"))["deviceType"] == "fincm3"


def test_another_device_type_is_refused_with_a_hint(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    run = cli(
        "os", "configure", mbr_image().path, "-o", tmp_path / "out.img", "--device-type", "fincm3"
    )
    assert run.code == 2
    assert "raspberrypi4-64" in run.err and "hint:" in run.err
    assert not (tmp_path / "out.img").exists()


def test_bad_settings_are_refused_before_the_image_is_read(
    cli: Callable[..., Run], tmp_path: Path
) -> None:
    run = cli("os", "configure", tmp_path / "does-not-exist.img", "--hostname", "Not Valid")
    assert run.code == 2
    assert "hostname" in run.err
    assert "does-not-exist" not in run.err


def test_output_must_not_be_the_input(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    edited = copy_image(mbr_image(), tmp_path / "edit")
    run = cli("os", "configure", edited.path, "-o", edited.path, *WIFI_ARGS)
    assert run.code == 2
    assert "in place" in run.err


def test_summary_names_the_files_and_hashes(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    image = mbr_image()
    out = tmp_path / "out.img"
    result = cli("--json", "os", "configure", image.path, "-o", out, *WIFI_ARGS).json()
    config_bytes = mtype(out, image.boot_offset, "/config.json")
    assert result["config_sha256"] == hashlib.sha256(config_bytes).hexdigest()
    assert result["image_sha256"] == file_sha256(out)
    assert result["files_written"] == ["/config.json", f"/system-connections/{WIFI_KEYFILE_NAME}"]
    assert (result["boot_partition"], result["boot_label"]) == (1, "resin-boot")
    assert result["in_place"] is False


def test_text_summary_is_readable(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    run = cli("os", "configure", mbr_image().path, "-o", tmp_path / "out.img", *WIFI_ARGS)
    assert run.code == 0
    assert "/system-connections/resin-wifi" in run.out
    assert "raspberrypi4-64" in run.out
    assert "image sha256" in run.out


def test_the_wifi_key_reaches_the_image_but_never_the_output(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    image = mbr_image()
    out = tmp_path / "out.img"
    runs = [
        cli("os", "configure", image.path, "-o", out, *WIFI_ARGS),
        cli("--json", "os", "configure", image.path, "-o", out, *WIFI_ARGS),
        cli("image", "inspect", out),
        cli("--json", "image", "inspect", out),
    ]
    assert [r.code for r in runs] == [0, 0, 0, 0]
    keyfile = mtype(out, image.boot_offset, f"/system-connections/{WIFI_KEYFILE_NAME}")
    assert f"psk={WIFI_KEY}".encode() in keyfile
    for run in runs:
        assert WIFI_KEY not in run.out + run.err


def test_inspect_redacts_the_provisioning_key(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(
        json.dumps({"applicationId": 1958513, "deviceType": "raspberrypi4-64", "apiKey": API_KEY})
    )
    out = tmp_path / "out.img"
    assert cli("os", "configure", mbr_image().path, "-o", out, "--config", config_file).code == 0
    text, as_json = cli("image", "inspect", out), cli("image", "inspect", out, "--json")
    assert API_KEY not in text.out + text.err + as_json.out
    assert as_json.json()["config"]["apiKey"] == "***"
    assert '"apiKey": "***"' in text.out


def test_inspect_shows_the_layout(cli: Callable[..., Run], gpt_image: ImageFactory) -> None:
    image = gpt_image()
    run = cli("image", "inspect", image.path)
    assert run.code == 0
    assert "GPT" in run.out
    for part in image.partitions:
        assert part.name in run.out
    assert "raspberrypi4-64" in run.out and "6.5.50+rev8" in run.out


def test_inspect_json_has_the_documented_keys(
    cli: Callable[..., Run], mbr_image: ImageFactory
) -> None:
    data = cli("--json", "image", "inspect", mbr_image().path).json()
    assert set(data) == {
        "path",
        "source_kind",
        "file_size_bytes",
        "size_bytes",
        "unpacked",
        "partition_table",
        "partitions",
        "boot_partition",
        "device_type",
        "device_type_aliases",
        "device_type_name",
        "os_version",
        "variant",
        "meta_balena_version",
        "installer",
        "config",
        "keyfiles",
        "allocation",
        "problems",
    }
    assert set(data["partitions"][0]) == {
        "number",
        "start_bytes",
        "size_bytes",
        "type_id",
        "filesystem",
        "label",
        "name",
        "bootable",
        "is_boot",
    }


def test_inspect_of_a_corrupt_file_fails_with_a_message(
    cli: Callable[..., Run], tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.img.gz"
    bogus.write_bytes(b"\x1f\x8b\x08\x00" + os.urandom(4096))
    run = cli("image", "inspect", bogus)
    assert run.code == 1
    assert run.err.startswith("error: ")
    assert "Traceback" not in run.err


def test_a_fleet_without_a_key_gets_its_config_json_from_the_api(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    image = mbr_image()
    out = tmp_path / "out.img"
    run = cli(
        "--sandbox",
        "--token",
        "t",
        "--json",
        "os",
        "configure",
        image.path,
        "-o",
        out,
        "--fleet",
        "1958513",
        "--hostname",
        "bench01",
    )
    assert run.code == 0, run.err
    config = json.loads(mtype(out, image.boot_offset, "/config.json"))
    assert (config["applicationId"], config["deviceType"]) == (1958513, "raspberrypi4-64")
    assert len(config["apiKey"]) == 32 and config["apiKey"] not in run.out + run.err
    assert config["hostname"] == "bench01"
    assert "persistentLogging" not in config  # the API's config replaces the image's


def test_a_fleet_without_a_key_or_login_is_refused_before_writing(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    run = cli("os", "configure", mbr_image().path, "-o", tmp_path / "out.img", "--fleet", "5")
    assert run.code == 2
    assert "provisioning_key" in run.err
    assert not (tmp_path / "out.img").exists()


def test_python_dash_m_flasher_runs_inspect(mbr_image: ImageFactory) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flasher", "--json", "image", "inspect", str(mbr_image().path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["device_type"] == "raspberrypi4-64"


def test_output_is_private_because_it_holds_keys(
    cli: Callable[..., Run],
    mbr_image: ImageFactory,
    compressed_image: CompressedFactory,
    tmp_path: Path,
) -> None:
    image = mbr_image()
    for source, name in ((image.path, "raw.img"), (compressed_image(image.path, "zst"), "z.img")):
        assert cli("os", "configure", source, "-o", tmp_path / name, *WIFI_ARGS).code == 0
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600


def test_an_unwritable_output_folder_is_an_error_naming_it(
    cli: Callable[..., Run], mbr_image: ImageFactory, tmp_path: Path
) -> None:
    run = cli(
        "os", "configure", mbr_image().path, "-o", tmp_path / "missing" / "out.img", *WIFI_ARGS
    )
    assert run.code == 2
    assert "missing" in run.err
