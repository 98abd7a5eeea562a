"""`flasher flash` end to end: sandbox and local sources, file and loop-device targets, JSON output,
exit codes, and nothing written when the settings are bad."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flasher.cli.main import main
from tests.conftest import ImageFactory
from tests.support.bootcheck import fsck_boot, mtype, region_sha256
from tests.support.filesystems import ext4_readback, extract
from tests.support.helper_driver import running_helpers
from tests.support.httpserver import HttpTestServer
from tests.support.loopdev import LoopDevices

WIFI_KEY = "correct-horse-battery"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASHER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FLASHER_WIFI_KEY", WIFI_KEY)
    monkeypatch.delenv("FLASHER_API_URL", raising=False)


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _boot_offset(path: Path) -> int:
    # the first MBR entry's LBA start (all our test and sandbox images are MBR here)
    with open(path, "rb") as f:
        f.seek(446 + 8)
        return int.from_bytes(f.read(4), "little") * 512


def test_sandbox_flash_makes_a_verified_configured_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.img"
    code = main(
        [
            "--sandbox",
            "--json",
            "flash",
            "--device-type",
            "raspberrypi4-64",
            "--network",
            "wifi",
            "--wifi-ssid",
            "Lab",
            "--target",
            str(card),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    events = _json_lines(out)
    results = [e for e in events if e["event"] == "target_result"]
    assert len(results) == 1 and results[0]["ok"] and results[0]["verified"]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["device_type"] == "raspberrypi4-64"
    assert WIFI_KEY not in out
    offset = _boot_offset(card)
    wifi = mtype(card, offset, "/system-connections/resin-wifi").decode()
    assert "ssid=Lab" in wifi and f"psk={WIFI_KEY}" in wifi
    config = json.loads(mtype(card, offset, "/config.json"))
    assert config["deviceType"] == "raspberrypi4-64"


def test_flash_reports_per_target_progress_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.img"
    assert (
        main(
            [
                "--sandbox",
                "--json",
                "flash",
                "--device-type",
                "raspberrypi4-64",
                "--target",
                str(card),
            ]
        )
        == 0
    )
    events = _json_lines(capsys.readouterr().out)
    phases = {e["phase"] for e in events if e["event"] == "progress" and e["target"]}
    assert {"writing", "verifying"} <= phases
    assert any(e["event"] == "progress" and e["phase"] == "downloading" for e in events)


def test_downloading_is_said_once_and_not_for_a_cached_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def phases(card: Path) -> list[object]:
        argv = ["--sandbox", "--json", "flash", "--device-type", "raspberrypi4-64"]
        assert main([*argv, "--target", str(card)]) == 0
        events = _json_lines(capsys.readouterr().out)
        return [e["phase"] for e in events if e["event"] == "phase" and e["target"] is None]

    first = phases(tmp_path / "one.img")
    assert first.count("downloading") == 1, first
    second = phases(tmp_path / "two.img")  # the same image, from the cache
    assert "downloading" not in second, second
    assert "configuring" in second


@pytest.fixture
def local_image(mbr_image: ImageFactory) -> Path:
    return mbr_image().path


def test_local_gz_and_raw_give_the_same_card(
    tmp_path: Path,
    local_image: Path,
    compressed_image: Callable[[Path, str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw_card, gz_card = tmp_path / "raw-card.img", tmp_path / "gz-card.img"
    opts = ["--network", "wifi", "--wifi-ssid", "Lab", "--hostname", "bench01"]
    assert main(["flash", str(local_image), "--target", str(raw_card), *opts]) == 0
    gz = compressed_image(local_image, "gz")
    assert main(["flash", str(gz), "--target", str(gz_card), *opts]) == 0
    capsys.readouterr()
    assert _sha256(raw_card) == _sha256(gz_card)
    offset = _boot_offset(raw_card)
    fsck_boot(raw_card, offset, 40 * 1024 * 1024, tmp_path)
    assert json.loads(mtype(raw_card, offset, "/config.json"))["hostname"] == "bench01"


def test_flash_without_options_writes_the_image_unchanged(
    tmp_path: Path, local_image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.img"
    assert main(["flash", str(local_image), "--target", str(card), "--write-all"]) == 0
    capsys.readouterr()
    assert _sha256(card) == _sha256(local_image)


def test_sparse_and_full_writes_agree_on_every_partition(
    tmp_path: Path, mbr_image: ImageFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    image = mbr_image()
    sparse, full = tmp_path / "sparse.img", tmp_path / "full.img"
    assert main(["flash", str(image.path), "--target", str(sparse)]) == 0
    assert main(["flash", str(image.path), "--target", str(full), "--write-all"]) == 0
    capsys.readouterr()
    for part in image.partitions:
        if part.fs == "extended":
            continue
        end = part.start_bytes + part.size_bytes
        assert region_sha256(sparse, part.start_bytes, end) == region_sha256(
            full, part.start_bytes, end
        ), part.label


def test_two_targets_at_once_are_identical_and_verified(
    tmp_path: Path, local_image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    code = main(
        [
            "--json",
            "flash",
            str(local_image),
            "--target",
            str(a),
            "--target",
            str(b),
            "--hostname",
            "twin",
        ]
    )
    events = _json_lines(capsys.readouterr().out)
    assert code == 0
    assert [e["verified"] for e in events if e["event"] == "target_result"] == [True, True]
    assert _sha256(a) == _sha256(b)


@pytest.fixture
def failing_target(tmp_path: Path) -> Iterator[Path]:
    """A file target whose writes fail: on a 2 MiB tmpfs as root (ENOSPC mid-write), else a
    read-only file (EACCES)."""
    if os.geteuid() != 0:
        bad = tmp_path / "read-only.img"
        bad.write_bytes(b"")
        os.chmod(bad, 0o444)
        yield bad
        return
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt / "full.img"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_one_failing_target_does_not_fail_the_other(
    tmp_path: Path, local_image: Path, failing_target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.img"
    code = main(
        [
            "--json",
            "flash",
            str(local_image),
            "--target",
            str(good),
            "--target",
            str(failing_target),
        ]
    )
    events = _json_lines(capsys.readouterr().out)
    assert code == 1, events[-1]
    results = {e["target"]: e for e in events if e["event"] == "target_result"}
    assert results[str(good)]["ok"] and results[str(good)]["verified"]
    assert not results[str(failing_target)]["ok"]
    assert results[str(failing_target)]["error"]


def test_bad_settings_are_rejected_before_anything_is_written(
    tmp_path: Path, local_image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.img"
    code = main(
        [
            "flash",
            str(local_image),
            "--target",
            str(card),
            "--network",
            "wifi",
            "--wifi-ssid",
            "x" * 33,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "wifi_ssid" in err
    assert not card.exists()
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_damaged_compressed_image_never_gives_a_good_card(
    tmp_path: Path,
    local_image: Path,
    compressed_image: Callable[[Path, str], Path],
    damage: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gz = tmp_path / "damaged.img.gz"
    data = compressed_image(local_image, "gz").read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        middle = len(data) // 2
        data = (
            data[:middle]
            + bytes(b ^ 0xFF for b in data[middle : middle + 64])
            + data[middle + 64 :]
        )
    gz.write_bytes(data)
    card = tmp_path / "card.img"
    code = main(["--json", "flash", str(gz), "--target", str(card)])
    events = _json_lines(capsys.readouterr().out)
    assert code == 1
    assert events[-1]["event"] == "error"
    assert events[-1]["details"]["problem"] in ("truncated", "corrupt")  # type: ignore[index]
    assert not any(e["event"] == "target_result" and e["ok"] for e in events)


def test_block_device_targets_need_consent(
    local_image: Path, loops: LoopDevices, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = loops.create(64 * 1024 * 1024, fill=b"\xa5")
    code = main(["flash", str(local_image), "--target", loop.path])
    assert code == 1
    assert "--yes" in capsys.readouterr().err
    assert loop.read(0, 4096) == b"\xa5" * 4096


def test_flash_to_loop_devices_verifies_every_partition(
    tmp_path: Path,
    mbr_image: ImageFactory,
    loops: LoopDevices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = mbr_image()
    targets = [loops.create(image.size_bytes + 8 * 1024 * 1024, fill=b"\xa5") for _ in range(2)]
    argv = ["--json", "flash", str(image.path), "--yes", "--hostname", "loopy"]
    for t in targets:
        argv += ["--target", t.path]
    code = main(argv)
    events = _json_lines(capsys.readouterr().out)
    assert code == 0, events[-3:]
    # The cards held a pattern before: free space keeps it (sparse write), so compare what the
    # filesystems hold, not raw partition bytes.
    for t in targets:
        device_copy = tmp_path / f"{Path(t.path).name}.img"
        with open(t.path, "rb") as src, open(device_copy, "wb") as dst:
            shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
        for part in image.partitions:
            if part.fs != "ext4":
                continue
            work = tmp_path / f"{Path(t.path).name}-{part.label}"
            work.mkdir()
            got = extract(device_copy, part.start_bytes, part.size_bytes, work / "got.ext4")
            want = extract(image.path, part.start_bytes, part.size_bytes, work / "want.ext4")
            fsck, got_tree = ext4_readback(got, work / "got")
            assert fsck.returncode == 0, (t.path, part.label, fsck.stdout)
            assert got_tree == ext4_readback(want, work / "want")[1], (t.path, part.label)
        boot = image.boot
        fsck_boot(device_copy, boot.start_bytes, boot.size_bytes, tmp_path)
        assert json.loads(mtype(device_copy, boot.start_bytes, "/config.json"))["hostname"] == (
            "loopy"
        )


def test_a_flash_that_fails_before_writing_leaves_no_helper_behind(
    tmp_path: Path, loops: LoopDevices, capsys: pytest.CaptureFixture[str]
) -> None:
    """As root the writer helper starts while the image is read; an image that turns out bad
    ends it too, and the card is untouched."""
    bad = tmp_path / "bad.img.gz"
    bad.write_bytes(gzip.compress(b"\x00" * 4096)[:-12])  # cut short: no end of stream
    loop = loops.create(64 * 1024 * 1024, fill=b"\xa5")
    code = main(["--json", "flash", str(bad), "--target", loop.path, "--yes"])
    events = _json_lines(capsys.readouterr().out)
    assert code != 0 and events[-1]["event"] == "error", events[-3:]
    assert loop.read(0, 4096) == b"\xa5" * 4096
    assert running_helpers() == []


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def test_fleet_flash_takes_config_json_from_the_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.img"
    code = main(
        [
            "--sandbox",
            "--token",
            "operator",
            "flash",
            "--device-type",
            "raspberrypi4-64",
            "--version",
            "6.5.50+rev8",
            "--fleet",
            "1958513",
            "--target",
            str(card),
        ]
    )
    capsys.readouterr()
    assert code == 0
    config = json.loads(mtype(card, _boot_offset(card), "/config.json"))
    assert config["applicationId"] == 1958513
    assert len(config["apiKey"]) == 32
    assert config["deviceType"] == "raspberrypi4-64"


def test_a_new_card_image_file_is_private(
    tmp_path: Path, local_image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.img"
    assert main(["flash", str(local_image), "--target", str(card), "--wifi-ssid", "Lab"]) == 0
    capsys.readouterr()
    assert card.stat().st_mode & 0o077 == 0


def test_ctrl_c_cancels_and_leaves_the_card_unbootable(tmp_path: Path, local_image: Path) -> None:
    # A large sparse image, written in full, so the write is still going when SIGINT arrives.
    big = tmp_path / "big.img"
    shutil.copyfile(local_image, big)
    with open(big, "r+b") as f:
        f.truncate(3 * 1024**3)
    card = tmp_path / "card.img"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flasher",
            "--json",
            "flash",
            str(big),
            "--target",
            str(card),
            "--write-all",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["phase"] == "writing" and event["done_bytes"]:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    with open(card, "rb") as f:
        assert f.read(1024 * 1024) == bytes(1024 * 1024)


@pytest.mark.parametrize("kind", ["zip", "xz", "zst", "bz2"])
def test_every_compressed_format_gives_the_card_raw_gives(
    tmp_path: Path,
    local_image: Path,
    compressed_image: Callable[[Path, str], Path],
    kind: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from_raw, from_kind = tmp_path / "raw.img", tmp_path / f"{kind}.img"
    assert main(["flash", str(local_image), "--target", str(from_raw), "--hostname", "x1"]) == 0
    source = compressed_image(local_image, kind)
    assert main(["flash", str(source), "--target", str(from_kind), "--hostname", "x1"]) == 0
    capsys.readouterr()
    assert _sha256(from_raw) == _sha256(from_kind)


def test_flash_from_an_http_url(
    tmp_path: Path,
    local_image: Path,
    compressed_image: Callable[[Path, str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    served = compressed_image(local_image, "gz").read_bytes()
    card, reference = tmp_path / "card.img", tmp_path / "reference.img"
    with HttpTestServer() as server:
        url = server.serve("/images/balena.img.gz", served)
        assert main(["flash", url, "--target", str(card), "--hostname", "web"]) == 0
    assert main(["flash", str(local_image), "--target", str(reference), "--hostname", "web"]) == 0
    capsys.readouterr()
    assert _sha256(card) == _sha256(reference)


def test_corrupt_zip_never_gives_a_good_card(
    tmp_path: Path,
    local_image: Path,
    compressed_image: Callable[[Path, str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = bytearray(compressed_image(local_image, "zip").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 32] = bytes(b ^ 0x5A for b in data[middle : middle + 32])
    broken = tmp_path / "broken.zip"
    broken.write_bytes(bytes(data))
    card = tmp_path / "card.img"
    code = main(["--json", "flash", str(broken), "--target", str(card)])
    events = _json_lines(capsys.readouterr().out)
    assert code == 1
    assert events[-1]["event"] == "error"
    assert not any(e["event"] == "target_result" and e["ok"] for e in events)
