"""Drive constraints: which drives are refused, which need confirmation, and why."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flasher.drives.constraints import (
    LARGE_DRIVE_BYTES,
    ProblemCode,
    Severity,
    check_drive,
    check_targets,
    source_device,
)
from flasher.errors import DriveRejected
from flasher.models import Drive, DrivePartition

GB = 10**9
IMAGE = 2 * GB
CARD = Drive(
    path="/dev/sdb",
    size_bytes=32 * GB,
    dev="8:16",
    serial="AA01",
    bus="usb",
    removable=True,
    partitions=(DrivePartition("/dev/sdb1", dev="8:17"),),
)
MOUNTED = DrivePartition("/dev/sdb1", mountpoints=("/media/u/boot",), dev="8:17")


def _codes(drive: Drive, **kwargs: Any) -> list[tuple[ProblemCode, Severity]]:
    return [(p.code, p.severity) for p in check_drive(drive, IMAGE, **kwargs)]


@pytest.mark.parametrize(
    ("drive", "expected"),
    [
        (CARD, []),
        (replace(CARD, system=True), [(ProblemCode.SYSTEM, Severity.ERROR)]),
        (replace(CARD, internal=True), [(ProblemCode.INTERNAL, Severity.ERROR)]),
        (replace(CARD, read_only=True), [(ProblemCode.READ_ONLY, Severity.ERROR)]),
        (replace(CARD, size_bytes=IMAGE - 1), [(ProblemCode.TOO_SMALL, Severity.ERROR)]),
        (replace(CARD, size_bytes=IMAGE), []),
        (replace(CARD, size_bytes=LARGE_DRIVE_BYTES + 1), [(ProblemCode.LARGE, Severity.WARNING)]),
        (replace(CARD, size_bytes=LARGE_DRIVE_BYTES), []),
        (replace(CARD, partitions=(MOUNTED,)), [(ProblemCode.MOUNTED, Severity.WARNING)]),
        (
            replace(CARD, read_only=True, size_bytes=GB),
            [(ProblemCode.READ_ONLY, Severity.ERROR), (ProblemCode.TOO_SMALL, Severity.ERROR)],
        ),
    ],
    ids=[
        "fine",
        "system",
        "internal",
        "locked",
        "too-small",
        "exactly-fits",
        "large",
        "at-the-large-limit",
        "mounted",
        "locked-and-small",
    ],
)
def test_check_drive_reports_each_problem(
    drive: Drive, expected: list[tuple[ProblemCode, Severity]]
) -> None:
    assert _codes(drive) == expected


def test_internal_disk_confirmed_on_its_own_is_only_a_warning() -> None:
    drive = replace(CARD, internal=True)
    assert _codes(drive, allow_internal=True) == [(ProblemCode.INTERNAL, Severity.WARNING)]


def test_system_drive_is_not_also_warned_about_mounts_or_size() -> None:
    drive = replace(CARD, system=True, size_bytes=LARGE_DRIVE_BYTES * 2, partitions=(MOUNTED,))
    assert _codes(drive) == [(ProblemCode.SYSTEM, Severity.ERROR)]


def test_too_small_message_names_both_sizes() -> None:
    (problem,) = check_drive(replace(CARD, size_bytes=GB), IMAGE)
    assert "1.0 GB" in problem.message and "2.0 GB" in problem.message


@pytest.mark.parametrize(
    "partition",
    [
        DrivePartition("/dev/sdb1", dev="8:17"),
        DrivePartition("/dev/sdb2", dev="8:18", holders=("253:3",)),
    ],
    ids=["on-a-partition", "on-an-lvm-volume-of-it"],
)
def test_drive_holding_the_source_image_is_refused(partition: DrivePartition) -> None:
    source_dev = partition.holders[0] if partition.holders else partition.dev
    drive = replace(CARD, partitions=(partition,))
    codes = _codes(drive, source_dev=source_dev)
    assert codes == [(ProblemCode.SOURCE_DRIVE, Severity.ERROR)]


def test_source_device_is_the_filesystem_holding_the_file(tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(b"x")
    st = os.stat(image)
    assert source_device(image) == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    assert source_device(tmp_path / "missing.img") is None


@pytest.mark.parametrize(
    "present",
    [
        [],
        [replace(CARD, serial="OTHER")],
        [replace(CARD, size_bytes=64 * GB)],
        [replace(CARD, dev="8:32")],
    ],
    ids=["unplugged", "other-serial", "other-size", "other-device-number"],
)
def test_drive_no_longer_present_as_confirmed_is_gone(present: list[Drive]) -> None:
    assert _codes(CARD, present=present) == [(ProblemCode.GONE, Severity.ERROR)]


def test_drive_still_present_is_not_gone() -> None:
    assert _codes(CARD, present=[replace(CARD)]) == []


def test_file_target_may_not_be_the_source_image(tmp_path: Path) -> None:
    image = tmp_path / "source.img"
    image.write_bytes(b"x")
    target = Drive(path=str(image), size_bytes=0, is_file=True)
    problems = check_drive(target, IMAGE, source_path=str(image))
    assert [p.code for p in problems] == [ProblemCode.SOURCE_DRIVE]
    assert (
        check_drive(replace(target, path=str(tmp_path / "out.img")), IMAGE, source_path=str(image))
        == []
    )


def test_check_targets_returns_warnings_when_nothing_blocks() -> None:
    warnings = check_targets([replace(CARD, partitions=(MOUNTED,))], IMAGE)
    assert [p.code for p in warnings] == [ProblemCode.MOUNTED]


def test_check_targets_raises_one_rejection_listing_every_error() -> None:
    drives = [
        replace(CARD, system=True),
        replace(CARD, path="/dev/sdc", dev="8:32", read_only=True),
    ]
    with pytest.raises(DriveRejected) as caught:
        check_targets(drives, IMAGE)
    problems = caught.value.fields["problems"]
    assert [(p["target"], p["code"]) for p in problems] == [
        ("/dev/sdb", "system"),
        ("/dev/sdc", "read_only"),
    ]
    assert "/dev/sdb" in caught.value.message and "/dev/sdc" in caught.value.message


def test_check_targets_refuses_the_same_drive_twice() -> None:
    with pytest.raises(DriveRejected) as caught:
        check_targets([CARD, replace(CARD)], IMAGE)
    assert [p["code"] for p in caught.value.fields["problems"]] == ["duplicate"]


def test_rejection_keeps_the_hint() -> None:
    with pytest.raises(DriveRejected) as caught:
        check_targets([replace(CARD, read_only=True)], IMAGE)
    assert caught.value.hint and "lock switch" in caught.value.hint
