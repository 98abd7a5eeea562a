"""Drives looked up from a command's start (EarlyDrives) on real loop devices: `resolve_target`
takes such a drive only for the same device, and looks anything else up itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flasher.drives import discovery
from flasher.drives.early import EarlyDrives
from flasher.errors import DriveError
from flasher.pipeline.write import resolve_target
from tests.support.loopdev import LoopDevices

MiB = 1024 * 1024


@pytest.mark.root
def test_an_early_drive_is_the_drive_found_now(loops: LoopDevices) -> None:
    loop = loops.create(16 * MiB)
    early = EarlyDrives([loop.path])
    drive = early.take(loop.path, os.stat(loop.path).st_rdev)
    assert drive is not None
    assert drive == discovery.find_drive(loop.path)
    assert drive.size_bytes == 16 * MiB


@pytest.mark.root
def test_resolve_target_takes_the_early_drive_without_looking_again(
    loops: LoopDevices, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = loops.create(16 * MiB)
    early = EarlyDrives([loop.path])
    early.take(loop.path, 0)  # waits for the lookup, before find_drive is replaced below
    looked_up: list[str] = []
    real = discovery.find_drive

    def counting(path: str, **kwargs: object) -> object:
        looked_up.append(path)
        return real(path)

    monkeypatch.setattr(discovery, "find_drive", counting)
    assert resolve_target(loop.path, early).path == loop.path
    assert looked_up == []
    other = loops.create(8 * MiB)  # not asked for early: looked up now
    assert resolve_target(other.path, early).size_bytes == 8 * MiB
    assert looked_up == [other.path]


@pytest.mark.root
def test_a_node_that_is_another_device_now_is_looked_up_again(loops: LoopDevices) -> None:
    first = loops.create(16 * MiB)
    early = EarlyDrives([first.path])
    second = loops.create(8 * MiB)
    # the same path, another device number: the early drive is not taken
    assert early.take(first.path, os.stat(second.path).st_rdev) is None
    assert early.take(first.path, os.stat(first.path).st_rdev) is not None


def test_a_missing_path_has_no_early_drive_and_is_reported_where_needed(tmp_path: Path) -> None:
    missing = "/dev/flasher-no-such-drive"
    early = EarlyDrives([missing, str(tmp_path / "file.img")])
    assert early.take(missing, 0) is None
    with pytest.raises(DriveError, match="no-such-drive"):
        resolve_target(missing, early)
