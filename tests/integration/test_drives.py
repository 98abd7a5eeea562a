"""Drive discovery, constraints and hotplug on real loop devices, and `flasher drives`."""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import subprocess
from pathlib import Path

import pytest

from flasher.cli import drives_cmds
from flasher.cli.context import CliContext
from flasher.cli.output import Output
from flasher.drives.constraints import ProblemCode, check_targets
from flasher.drives.discovery import find_drive, list_drives
from flasher.drives.monitor import DriveAction, DriveEvent, DriveMonitor
from flasher.errors import DriveRejected
from flasher.models import Drive
from flasher.writer import sysblock
from tests.support.loopdev import LoopDevice, LoopDevices

MiB = 1024 * 1024
PARTITIONED = "label: dos\n,8M,c\n,,83\n"
WAIT_S = 10


def _listed(loop: LoopDevice, *, all: bool = False) -> Drive | None:
    return next((d for d in list_drives(all=all) if d.path == loop.path), None)


def test_listed_drives_are_whole_disks_that_exist() -> None:
    for drive in list_drives(all=True):
        assert os.path.exists(drive.path)
        assert drive.size_bytes > 0
        assert not sysblock.is_partition(drive.dev)
        assert not os.path.basename(drive.path).startswith(("ram", "zram", "dm-"))


@pytest.mark.root
def test_attached_loop_device_is_listed_with_its_facts(loops: LoopDevices) -> None:
    loop = loops.create(24 * MiB)
    drive = _listed(loop)
    assert drive is not None
    assert (drive.bus, drive.dev, drive.size_bytes) == ("loop", loop.dev, 24 * MiB)
    assert drive.description == str(loop.backing)
    assert not drive.system and not drive.read_only
    assert drive.logical_block_size == 512


@pytest.mark.root
def test_detached_loop_device_is_not_listed(loops: LoopDevices) -> None:
    loop = loops.create(16 * MiB)
    loops.detach(loop)
    assert _listed(loop, all=True) is None


@pytest.mark.root
def test_write_protected_loop_device_is_read_only(loops: LoopDevices) -> None:
    drive = _listed(loops.create(16 * MiB, read_only=True))
    assert drive is not None and drive.read_only


def _with_ext4(loops: LoopDevices) -> LoopDevice:
    if subprocess.run(["which", "mkfs.ext4"], capture_output=True).returncode:
        pytest.skip("mkfs.ext4 not installed")
    loop = loops.create(32 * MiB, sfdisk_script=PARTITIONED)
    subprocess.run(["mkfs.ext4", "-q", "-L", "flasher-t", loop.partition(2)], check=True)
    return loop


@pytest.mark.root
def test_partitions_carry_their_mountpoints(loops: LoopDevices) -> None:
    loop = _with_ext4(loops)
    mountpoint = loops.mount(loop.partition(2))
    drive = _listed(loop)
    assert drive is not None and not drive.system
    by_path = {p.path: p for p in drive.partitions}
    assert by_path[loop.partition(2)].mountpoints == (mountpoint,)
    assert by_path[loop.partition(2)].fstype == "ext4"
    assert by_path[loop.partition(1)].mountpoints == ()
    assert drive.mountpoints == (mountpoint,)


@pytest.mark.root
def test_loop_device_holding_a_system_path_is_hidden_unless_all(
    loops: LoopDevices, tmp_path: Path
) -> None:
    loop = _with_ext4(loops)
    mountpoint = tmp_path / "opt"
    mountpoint.mkdir()
    loops.mount(loop.partition(2), str(mountpoint))
    assert _listed(loop) is None
    drive = _listed(loop, all=True)
    assert drive is not None and drive.system


@pytest.mark.root
def test_mounted_drive_is_a_warning_not_an_error(loops: LoopDevices) -> None:
    loop = _with_ext4(loops)
    loops.mount(loop.partition(2))
    drive = _listed(loop)
    assert drive is not None
    assert [p.code for p in check_targets([drive], 4 * MiB)] == [ProblemCode.MOUNTED]


@pytest.mark.root
def test_drive_holding_the_source_image_is_refused(loops: LoopDevices) -> None:
    loop = _with_ext4(loops)
    mountpoint = loops.mount(loop.partition(2))
    source = Path(mountpoint) / "balena.img"
    source.write_bytes(bytes(MiB))
    drive = _listed(loop)
    assert drive is not None
    with pytest.raises(DriveRejected) as caught:
        check_targets([drive], MiB, source)
    assert [p["code"] for p in caught.value.fields["problems"]] == ["source_drive"]


@pytest.mark.root
def test_find_drive_follows_links_and_notices_a_missing_drive(
    loops: LoopDevices, tmp_path: Path
) -> None:
    loop = loops.create(16 * MiB)
    link = tmp_path / "card"
    link.symlink_to(loop.path)
    found = find_drive(str(link))
    assert found is not None and found.path == loop.path
    assert find_drive(str(tmp_path / "nothing")) is None


def _next(events: queue.Queue[DriveEvent], path: str) -> DriveEvent:
    while True:
        event = events.get(timeout=WAIT_S)
        if event.drive.path == path:
            return event


@pytest.mark.root
def test_monitor_reports_attach_mount_and_detach(loops: LoopDevices) -> None:
    events: queue.Queue[DriveEvent] = queue.Queue()
    with DriveMonitor(initial=False) as monitor:
        monitor.start(events.put)
        loop = loops.create(16 * MiB)
        added = _next(events, loop.path)
        assert added.action is DriveAction.ADD and added.drive.bus == "loop"
        loops.detach(loop)
        removed = _next(events, loop.path)
        assert removed.action is DriveAction.REMOVE


@pytest.mark.root
def test_monitor_starts_with_the_drives_already_present(loops: LoopDevices) -> None:
    loop = loops.create(16 * MiB)
    with DriveMonitor() as monitor:
        first = [e for e in _take_initial(monitor) if e.drive.path == loop.path]
    assert [e.action for e in first] == [DriveAction.ADD]


def _take_initial(monitor: DriveMonitor) -> list[DriveEvent]:
    current = {d.path for d in list_drives()}
    taken: list[DriveEvent] = []
    for event in monitor.events():
        taken.append(event)
        if {e.drive.path for e in taken} >= current:
            monitor.stop()
            break
    return taken


def _run_cli(*argv: str) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    drives_cmds.register({"": parser.add_subparsers()})
    args = parser.parse_args(argv)
    stdout = io.StringIO()
    ctx = CliContext(
        args=args, out=Output(json_mode=args.json, stdout=stdout, stderr=io.StringIO())
    )
    assert args.handler(args, ctx) == 0
    return stdout.getvalue()


@pytest.mark.root
def test_drives_command_lists_a_loop_device_as_json(loops: LoopDevices) -> None:
    loop = loops.create(16 * MiB)
    for argv in (["--json", "drives", "--all"], ["drives", "--all", "--json"]):
        listed = json.loads(_run_cli(*argv))
        (entry,) = [d for d in listed if d["path"] == loop.path]
        assert entry["bus"] == "loop" and entry["size_bytes"] == 16 * MiB
        assert entry["flags"] == []


@pytest.mark.root
def test_drives_command_table_shows_path_size_and_flags(loops: LoopDevices) -> None:
    loop = loops.create(16 * MiB, read_only=True)
    table = _run_cli("drives")
    assert table.splitlines()[0].split() == ["PATH", "SIZE", "BUS", "MODEL", "FLAGS"]
    (row,) = [line for line in table.splitlines() if line.startswith(loop.path + " ")]
    assert "16.8 MB" in row and "loop" in row and row.endswith("read-only")
