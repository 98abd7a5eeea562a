"""File targets as root: never a missing /dev node, never someone else's symlink, always 0600.

The shared-directory tests run as root with a sticky, world-writable folder (like /tmp) and a
second user (nobody) planting links and files there from a forked child.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flasher.cli.main import main
from flasher.drives.constraints import check_targets
from flasher.errors import DriveRejected
from flasher.models import Drive
from flasher.writer.blockdev import open_regular_file
from flasher.writer.filetarget import filesystem_type, is_device_namespace
from tests.conftest import ImageFactory
from tests.support.loopdev import LoopDevices, require_loop

MISSING_DRIVE = "/dev/flasher-test-no-such-drive"


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def image(mbr_image: ImageFactory) -> Path:
    return mbr_image().path


def _json_error(out: str) -> dict[str, object]:
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    errors = [e for e in events if e.get("event") == "error"]
    assert errors, out
    return errors[-1]


# -- item 1: a device path that does not exist -----------------------------------------------


@pytest.mark.parametrize("target", [MISSING_DRIVE, "/dev/shm/../flasher-test-sdz"])
def test_missing_device_path_is_refused_and_never_created(
    image: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--json", "flash", str(image), "--target", target, "--yes"])
    out = capsys.readouterr().out
    assert code == 4, out
    error = _json_error(out)
    assert error["code"] == "drive_rejected"
    assert "no such drive" in str(error["message"])
    assert "list the drives" in str(error["hint"])
    assert not os.path.lexists(os.path.normpath(target))


def test_existing_regular_file_under_dev_is_refused(
    image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a file in /dev")
    planted = Path("/dev/flasher-test-planted")
    planted.write_bytes(b"x" * 4096)
    try:
        code = main(["--json", "flash", str(image), "--target", str(planted), "--yes"])
        out = capsys.readouterr().out
        assert code == 4, out
        assert planted.read_bytes() == b"x" * 4096
    finally:
        planted.unlink()


def test_symlink_into_dev_is_refused(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = tmp_path / "card.img"
    link.symlink_to(MISSING_DRIVE)
    code = main(["--json", "flash", str(image), "--target", str(link), "--yes"])
    assert code == 4, capsys.readouterr().out
    assert not os.path.lexists(MISSING_DRIVE)


def test_gui_file_drive_in_dev_is_rejected_by_the_shared_checks() -> None:
    drive = Drive(path=MISSING_DRIVE, size_bytes=0, is_file=True, description="new file")
    with pytest.raises(DriveRejected) as info:
        check_targets([drive], 1024)
    assert info.value.fields["problems"][0]["code"] == "not_found"


def test_filesystem_type_reads_the_deepest_mount(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "23 22 0:5 / /srv/odd\\040dev rw - devtmpfs udev rw\n"
        "24 23 0:6 / /srv/odd\\040dev/pts rw - devpts devpts rw\n"
    )
    assert filesystem_type("/srv/odd dev/sdz", str(mountinfo)) == "devtmpfs"
    assert filesystem_type("/srv/odd dev/pts/0", str(mountinfo)) == "devpts"
    assert filesystem_type("/srv/odd devx", str(mountinfo)) == "ext4"


def test_devtmpfs_mounted_elsewhere_counts_as_device_namespace(tmp_path: Path) -> None:
    require_loop()  # root and mount(8)
    where = tmp_path / "devs"
    where.mkdir()
    if os.system(f"mount -t devtmpfs none {where} 2>/dev/null") != 0:
        pytest.skip("devtmpfs cannot be mounted here")
    try:
        assert is_device_namespace(str(where / "sdz"))
    finally:
        os.system(f"umount {where}")
    assert not is_device_namespace(str(where / "sdz"))


# -- item 2: planted symlinks and private modes ----------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A sticky, world-writable folder every user can reach, as /tmp is."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as a second user")
    shared = Path(tempfile.mkdtemp(prefix="flasher-shared-", dir="/tmp"))
    os.chmod(shared, 0o1777)
    yield shared
    shutil.rmtree(shared)


def _as_other_user(action: str, *paths: Path) -> None:
    """Run `action` on `paths` in a child process that has become the user nobody."""
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            if action == "symlink":
                os.symlink(paths[0], paths[1])
            else:
                paths[0].write_bytes(b"theirs")
                os.chmod(paths[0], 0o644)
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "victim"
    path.write_bytes(b"precious")
    yield path
    assert path.read_bytes() == b"precious"


def test_flash_refuses_another_users_planted_symlink(
    shared_dir: Path, victim: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = shared_dir / "card.img"
    _as_other_user("symlink", victim, link)
    code = main(["--json", "flash", str(image), "--target", str(link), "--yes"])
    out = capsys.readouterr().out
    assert code == 4, out
    assert _json_error(out)["details"]["problems"][0]["code"] == "foreign_symlink"  # type: ignore[index]


def test_engine_open_refuses_another_users_symlink(shared_dir: Path, victim: Path) -> None:
    link = shared_dir / "card.img"
    _as_other_user("symlink", victim, link)
    with pytest.raises(DriveRejected) as info:
        open_regular_file(str(link), size_bytes=4096, create=True)
    assert info.value.fields["problem"] == "foreign_symlink"


def test_engine_open_refuses_another_users_file_in_a_sticky_folder(shared_dir: Path) -> None:
    theirs = shared_dir / "card.img"
    _as_other_user("file", theirs)
    with pytest.raises(DriveRejected) as info:
        open_regular_file(str(theirs), size_bytes=4096, create=True)
    assert info.value.fields["problem"] == "foreign_file"
    assert theirs.read_bytes() == b"theirs"


def test_own_symlink_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.img"
    link = tmp_path / "link.img"
    link.symlink_to(real)
    target = open_regular_file(str(link), size_bytes=8192, create=True)
    target.close()
    assert real.stat().st_size == 8192 and link.is_symlink()


@pytest.mark.parametrize("existing_mode", [None, 0o644, 0o666])
def test_file_target_is_private_after_flashing(
    tmp_path: Path, image: Path, existing_mode: int | None, capsys: pytest.CaptureFixture[str]
) -> None:
    card = tmp_path / "card.img"
    if existing_mode is not None:
        card.write_bytes(b"old")
        os.chmod(card, existing_mode)
    assert main(["flash", str(image), "--target", str(card), "--hostname", "h1"]) == 0
    capsys.readouterr()
    assert stat.S_IMODE(card.stat().st_mode) == 0o600


def test_configure_in_place_leaves_the_image_private(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASHER_WIFI_KEY", "secret-key-1")
    copy = tmp_path / "copy.img"
    copy.write_bytes(image.read_bytes())
    os.chmod(copy, 0o644)
    code = main(["os", "configure", str(copy), "--network", "wifi", "--wifi-ssid", "Lab"])
    assert code == 0, capsys.readouterr()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600


def test_erase_consent_is_asked_for_a_symlink_to_a_disk(
    tmp_path: Path, image: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_loop()
    with LoopDevices(tmp_path) as loops:
        loop = loops.create(64 * 1024 * 1024)
        link = tmp_path / "card"
        link.symlink_to(loop.path)
        before = loop.read(0, 1024 * 1024)
        code = main(["--json", "flash", str(image), "--target", str(link)])
        out = capsys.readouterr().out
        assert code != 0
        assert "erase" in str(_json_error(out)["message"]).lower()
        assert loop.read(0, 1024 * 1024) == before
