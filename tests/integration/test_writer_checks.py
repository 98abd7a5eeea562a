"""What the writer helper refuses, whatever the app asked: partitions, non-block paths, system
disks, swapped or changed drives, busy mounts; and how launch failures surface."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import pytest

from flasher.errors import (
    AuthorizationDenied,
    DriveGone,
    DriveRejected,
    ImageError,
    WriterError,
    WriterProtocolError,
)
from flasher.events import Event, Log
from flasher.models import Drive
from flasher.writer import sysblock
from flasher.writer.blockdev import BlockDevicePolicy
from flasher.writer.client import ImageFeed, TargetResult, write_image
from flasher.writer.launchers import (
    DIRECT_HELPER_ARGS,
    INSTALLED_HELPER,
    POLKIT_ACTION,
    DirectLauncher,
    InProcessLauncher,
    PkexecLauncher,
)
from flasher.writer.protocol import TargetSpec
from tests.support.loopdev import LoopDevices, require_loop
from tests.support.writer_policy import RegularFilePolicy

MiB = 1024 * 1024
PARTITIONED = "label: dos\n,8M,c\n,,83\n"


@pytest.fixture
def feed(tmp_path: Path) -> ImageFeed:
    path = tmp_path / "image.img"
    path.write_bytes(random.Random(3).randbytes(16 * MiB))
    return ImageFeed.from_file(path)


def _as_confirmed(path: str) -> Drive:
    """The drive as a person would have confirmed it: its current number, size and serial."""
    dev = sysblock.rdev_of(path)
    assert dev is not None
    return Drive(
        path=path, size_bytes=sysblock.size_bytes(dev), dev=dev, serial=sysblock.read_serial(dev)
    )


def _write(feed: ImageFeed, drive: Drive, events: list[Event] | None = None) -> TargetResult:
    (result,) = write_image(
        feed,
        [drive],
        launcher=InProcessLauncher(BlockDevicePolicy()),
        on_event=(events.append if events is not None else lambda _e: None),
    )
    return result


def _problem(result: TargetResult) -> str:
    assert isinstance(result.error, DriveRejected), result.error
    return str(result.error.problem)


@pytest.mark.root
def test_helper_refuses_a_partition(loops: LoopDevices, feed: ImageFeed) -> None:
    loop = loops.create(32 * MiB, sfdisk_script=PARTITIONED)
    result = _write(feed, _as_confirmed(loop.partition(2)))
    assert _problem(result) == "partition"
    assert result.error is not None and loop.path in (result.error.hint or "")


@pytest.mark.root
def test_helper_refuses_a_path_that_is_not_a_block_device(
    loops: LoopDevices, feed: ImageFeed, tmp_path: Path
) -> None:
    plain = tmp_path / "disk.img"
    plain.write_bytes(bytes(32 * MiB))
    result = _write(feed, Drive(path=str(plain), size_bytes=32 * MiB, dev="7:0"))
    assert _problem(result) == "not_block_device"


@pytest.mark.root
def test_helper_refuses_a_vanished_path(loops: LoopDevices, feed: ImageFeed) -> None:
    result = _write(feed, Drive(path="/dev/flasher-no-such-disk", size_bytes=32 * MiB, dev="7:0"))
    assert isinstance(result.error, DriveGone)


def _system_disk() -> str:
    dev = f"{os.major(os.stat('/').st_dev)}:{os.minor(os.stat('/').st_dev)}"
    if not sysblock.exists(dev):
        pytest.skip("the root filesystem is not on a block device here")
    if sysblock.is_partition(dev):
        dev = sysblock.block_dev(os.path.dirname(sysblock.sys_path(dev)))
    return f"/dev/{os.path.basename(sysblock.sys_path(dev))}"


@pytest.mark.root
def test_helper_refuses_a_symlink_to_the_system_disk(tmp_path: Path) -> None:
    require_loop()
    disk = _system_disk()
    link = tmp_path / "innocent-card"
    link.symlink_to(disk)
    confirmed = _as_confirmed(disk)
    # Only the checks run (no open), and the size is wrong as well: even a broken system check
    # could not lead to the system disk being opened here.
    spec = TargetSpec(str(link), confirmed.dev, confirmed.size_bytes + 512, confirmed.serial)
    with pytest.raises(DriveRejected) as caught:
        BlockDevicePolicy().resolve(spec, lambda _m: None)
    assert caught.value.problem == "system"


@pytest.mark.root
def test_helper_follows_a_symlink_to_a_removable_drive(
    loops: LoopDevices, feed: ImageFeed, tmp_path: Path
) -> None:
    loop = loops.create(32 * MiB)
    link = tmp_path / "by-id-card"
    link.symlink_to(loop.path)
    events: list[Event] = []
    result = _write(feed, replace(_as_confirmed(loop.path), path=str(link)), events)
    assert result.ok and result.target == str(link)
    assert any(isinstance(e, Log) and loop.path in e.message for e in events)


@pytest.mark.root
@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"size_bytes": 32 * MiB + 512}, "size_changed"),
        ({"serial": "SWAPPED-CARD"}, "serial_changed"),
        ({"dev": "7:250"}, "device_changed"),
    ],
    ids=["size", "serial", "device-number"],
)
def test_helper_refuses_a_drive_that_changed_since_it_was_confirmed(
    loops: LoopDevices, feed: ImageFeed, change: dict[str, object], problem: str
) -> None:
    loop = loops.create(32 * MiB)
    result = _write(feed, replace(_as_confirmed(loop.path), **change))  # type: ignore[arg-type]
    assert _problem(result) == problem


@pytest.mark.root
def test_helper_refuses_a_write_protected_card(loops: LoopDevices, feed: ImageFeed) -> None:
    loop = loops.create(32 * MiB, read_only=True)
    assert _problem(_write(feed, _as_confirmed(loop.path))) == "read_only"


@pytest.mark.root
def test_helper_refuses_a_card_smaller_than_the_image(loops: LoopDevices, feed: ImageFeed) -> None:
    loop = loops.create(8 * MiB, fill=b"\x55")
    assert _problem(_write(feed, _as_confirmed(loop.path))) == "too_small"
    assert loop.read(0, MiB) == b"\x55" * MiB  # refused before anything was written


def _ext4_partition(loops: LoopDevices) -> tuple[str, str]:
    if subprocess.run(["which", "mkfs.ext4"], capture_output=True).returncode:
        pytest.skip("mkfs.ext4 not installed")
    loop = loops.create(32 * MiB, sfdisk_script=PARTITIONED)
    subprocess.run(["mkfs.ext4", "-q", loop.partition(2)], check=True)
    return loop.path, loop.partition(2)


@pytest.mark.root
def test_helper_refuses_a_loop_device_holding_a_system_mount(
    loops: LoopDevices, feed: ImageFeed, tmp_path: Path
) -> None:
    disk, part = _ext4_partition(loops)
    mountpoint = tmp_path / "srv"
    mountpoint.mkdir()
    loops.mount(part, str(mountpoint))  # outside /media, /run/media and /mnt: the system's
    assert _problem(_write(feed, _as_confirmed(disk))) == "system"
    assert os.path.ismount(mountpoint)


@pytest.mark.root
def test_helper_unmounts_media_mounts_before_writing(loops: LoopDevices, feed: ImageFeed) -> None:
    disk, part = _ext4_partition(loops)
    mountpoint = loops.mount(part)
    events: list[Event] = []
    result = _write(feed, _as_confirmed(disk), events)
    assert result.ok, result.error
    assert not os.path.ismount(mountpoint)
    assert any(isinstance(e, Log) and f"unmounted {mountpoint}" in e.message for e in events)


@pytest.mark.root
def test_helper_refuses_a_busy_mount_instead_of_detaching_it(
    loops: LoopDevices, feed: ImageFeed
) -> None:
    disk, part = _ext4_partition(loops)
    mountpoint = loops.mount(part)
    with open(os.path.join(mountpoint, "open-file"), "w"):
        result = _write(feed, _as_confirmed(disk))
    assert _problem(result) == "busy"
    assert os.path.ismount(mountpoint)


def test_file_policy_lets_the_helper_write_a_file_disk(feed: ImageFeed, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(20 * MiB))
    drive = Drive(path=str(disk), size_bytes=20 * MiB, dev="")
    (result,) = write_image(feed, [drive], launcher=InProcessLauncher(RegularFilePolicy(tmp_path)))
    assert result.ok and result.verified, result.error
    assert feed.path is not None
    assert disk.read_bytes()[: 16 * MiB] == Path(feed.path).read_bytes()


def test_file_policy_refuses_files_outside_its_directory(feed: ImageFeed, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.img"
    outside.write_bytes(bytes(20 * MiB))
    (tmp_path / "jail").mkdir()
    drive = Drive(path=str(outside), size_bytes=20 * MiB, dev="")
    launcher = InProcessLauncher(RegularFilePolicy(tmp_path / "jail"))
    (result,) = write_image(feed, [drive], launcher=launcher)
    assert isinstance(result.error, DriveRejected)


def test_polkit_policy_names_the_helper_the_launcher_runs() -> None:
    policy = (
        Path(__file__).resolve().parents[2] / "packaging" / "polkit" / "io.balena.flasher.policy"
    )
    action = ElementTree.parse(policy).getroot().find("action")
    assert action is not None and action.get("id") == POLKIT_ACTION
    annotation = action.find("annotate[@key='org.freedesktop.policykit.exec.path']")
    assert annotation is not None and annotation.text == INSTALLED_HELPER


def test_helper_rejects_an_image_shorter_than_announced(tmp_path: Path) -> None:
    short = tmp_path / "short.img"
    short.write_bytes(bytes(MiB))
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(8 * MiB))
    feed = ImageFeed(size_bytes=4 * MiB, path=str(short))
    drive = Drive(path=str(disk), size_bytes=8 * MiB, dev="")
    with pytest.raises(ImageError, match="fewer than"):
        write_image(feed, [drive], launcher=InProcessLauncher(RegularFilePolicy(tmp_path)))
    assert disk.read_bytes() == bytes(8 * MiB)


@pytest.mark.parametrize(
    ("args", "stdin"),
    [(["--allow-files"], subprocess.DEVNULL), ([], subprocess.DEVNULL)],
    ids=["any-argument", "stdin-not-a-socket"],
)
def test_helper_entry_point_refuses_arguments_and_non_socket_stdin(
    args: list[str], stdin: int
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flasher.writer", *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2
    assert "flasher-writer" in done.stderr


def test_frozen_app_runs_the_helper_when_started_as_the_direct_launcher_starts_it() -> None:
    """The bundle's entry point has no `python -m`: it must recognise the launcher's
    arguments and run the helper (which refuses a stdin that is not a socket)."""
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            sys.executable,
            str(repo / "packaging" / "pyinstaller" / "flasher_gui.py"),
            *DIRECT_HELPER_ARGS,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert done.returncode == 2
    assert "flasher-writer: stdin must be the socket" in done.stderr


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-tool"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("code", [126, 127])
def test_pkexec_refusal_is_authorization_denied(feed: ImageFeed, tmp_path: Path, code: int) -> None:
    launcher = PkexecLauncher(helper_path="/bin/sh", pkexec=_script(tmp_path, f"exit {code}"))
    drive = Drive(path="/dev/sdz", size_bytes=32 * MiB, dev="8:250")
    with pytest.raises(AuthorizationDenied):
        write_image(feed, [drive], launcher=launcher)


def test_helper_dying_before_hello_is_a_writer_error(feed: ImageFeed, tmp_path: Path) -> None:
    launcher = DirectLauncher(python=_script(tmp_path, "echo broken >&2; exit 3"))
    drive = Drive(path="/dev/sdz", size_bytes=32 * MiB, dev="8:250")
    with pytest.raises(WriterError) as caught:
        write_image(feed, [drive], launcher=launcher)
    assert caught.value.helper_exit_code == 3
    assert "broken" in caught.value.stderr


def test_helper_speaking_another_protocol_version_is_refused(
    feed: ImageFeed, tmp_path: Path
) -> None:
    launcher = DirectLauncher(
        python=_script(tmp_path, """printf '{"event":"hello","v":99}\\n' >&0""")
    )
    drive = Drive(path="/dev/sdz", size_bytes=32 * MiB, dev="8:250")
    with pytest.raises(WriterProtocolError, match="protocol 99"):
        write_image(feed, [drive], launcher=launcher)
