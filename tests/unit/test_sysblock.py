"""Parsing the mount table and swap list, and the system-mountpoint rule shared by both sides."""

from __future__ import annotations

import os
import stat

import pytest

from flasher.writer.sysblock import (
    DiskUse,
    Mount,
    dev_string,
    is_system_mountpoint,
    mounts_of,
    parse_mountinfo,
    parse_swaps,
)

MOUNTINFO = (
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
    "40 27 8:17 / /media/u/my\\040card rw - vfat /dev/sdb1 rw\n"
    "41 27 8:18 / /run/media/u/root rw shared:5 master:1 - ext4 /dev/sdb2 rw\n"
    "22 27 0:21 / /proc rw - proc proc rw\n"
)


def test_parse_mountinfo_reads_device_source_mountpoint_and_type() -> None:
    assert parse_mountinfo(MOUNTINFO) == [
        Mount("254:0", "/dev/vda", "/", "ext4"),
        Mount("8:17", "/dev/sdb1", "/media/u/my card", "vfat"),
        Mount("8:18", "/dev/sdb2", "/run/media/u/root", "ext4"),
        Mount("0:21", "proc", "/proc", "proc"),
    ]


def _a_block_device() -> str:
    for name in sorted(os.listdir("/dev")):
        path = os.path.join("/dev", name)
        if stat.S_ISBLK(os.lstat(path).st_mode):
            return path
    pytest.skip("no block device node in /dev")


def test_a_mount_with_an_anonymous_number_is_found_by_its_source_node() -> None:
    """btrfs gives its mounts an anonymous device number (0:N); the source names the node."""
    node = _a_block_device()
    rdev = dev_string(os.stat(node).st_rdev)
    btrfs = Mount("0:45", node, "/media/u/data", "btrfs")
    by_number = Mount(rdev, "overlay", "/media/u/other", "ext4")
    elsewhere = Mount("0:46", "/dev/null-not-a-disk", "/media/u/x", "btrfs")
    assert mounts_of([rdev], [btrfs, by_number, elsewhere]) == [btrfs, by_number]
    assert mounts_of(["0:1"], [btrfs, by_number]) == []


def test_parse_swaps_lists_the_swap_areas() -> None:
    text = (
        "Filename\tType\tSize\tUsed\tPriority\n"
        "/dev/sda3  partition\t8388604\t0\t-2\n"
        "/swap\\040file  file\t1024\t0\t-3\n"
    )
    assert parse_swaps(text) == ["/dev/sda3", "/swap file"]


@pytest.mark.parametrize(
    ("mountpoint", "system"),
    [
        ("/", True),
        ("/boot/efi", True),
        ("/home", True),
        ("/srv/data", True),
        ("/media/u/card", False),
        ("/run/media/u/card", False),
        ("/mnt/usb", False),
        ("/media", True),
        ("/mntx/usb", True),
    ],
)
def test_system_mountpoints_are_everything_outside_removable_media_roots(
    mountpoint: str, system: bool
) -> None:
    assert is_system_mountpoint(mountpoint) is system


def test_disk_use_is_system_for_system_mounts_or_swap() -> None:
    media = Mount("8:17", "/dev/sdb1", "/media/u/card", "vfat")
    root = Mount("8:18", "/dev/sdb2", "/", "ext4")
    assert not DiskUse((media,), ()).is_system
    assert DiskUse((media, root), ()).is_system
    assert DiskUse((), ("/dev/sdb3",)).is_system
    assert DiskUse((media, root), ("/dev/sdb3",)).reasons() == [
        "/ is mounted from it",
        "swap /dev/sdb3 is on it",
    ]
