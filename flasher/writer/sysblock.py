"""Facts about block devices from sysfs, /proc/self/mountinfo, /proc/swaps and the udev database.

Standard library only: the root writer helper and the unprivileged drive discovery both judge
"is this a system disk", "what is its serial" and "what is mounted from it" with these functions,
so the two sides can never disagree about a target.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

SYS_DEV_BLOCK = "/sys/dev/block"
SYS_CLASS_BLOCK = "/sys/class/block"
UDEV_DATA_DIR = "/run/udev/data"
MOUNTINFO_PATH = "/proc/self/mountinfo"
SWAPS_PATH = "/proc/swaps"

SYSTEM_MOUNTPOINTS = frozenset({"/", "/boot", "/boot/efi", "/usr", "/var", "/home"})
# Where desktops and people mount removable media; a mount anywhere else is treated as part of
# the running system (e.g. /srv, /opt, /var/lib/docker), which is what protects odd setups.
REMOVABLE_MOUNT_ROOTS = ("/media", "/run/media", "/mnt")
SWAP_MOUNTPOINT = "[SWAP]"


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo: the device number, source, mountpoint and type."""

    dev: str
    source: str
    mountpoint: str
    fstype: str


@dataclass(frozen=True)
class DiskUse:
    """What the running system uses from a disk, its partitions and their holders."""

    mounts: tuple[Mount, ...]
    swaps: tuple[str, ...]

    @property
    def system_mounts(self) -> tuple[Mount, ...]:
        return tuple(m for m in self.mounts if is_system_mountpoint(m.mountpoint))

    @property
    def is_system(self) -> bool:
        return bool(self.system_mounts or self.swaps)

    def reasons(self) -> list[str]:
        """Short phrases naming each system use, for error messages."""
        out = [f"{m.mountpoint} is mounted from it" for m in self.system_mounts]
        out += [f"swap {s} is on it" for s in self.swaps]
        return out


def dev_string(rdev: int) -> str:
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def is_system_mountpoint(mountpoint: str) -> bool:
    if mountpoint in SYSTEM_MOUNTPOINTS:
        return True
    return not any(mountpoint.startswith(root + "/") for root in REMOVABLE_MOUNT_ROOTS)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 3:
            continue
        mounts.append(
            Mount(
                dev=fields[2],
                source=_unescape(fields[sep + 2]),
                mountpoint=_unescape(fields[4]),
                fstype=fields[sep + 1],
            )
        )
    return mounts


def read_mounts(path: str = MOUNTINFO_PATH) -> list[Mount]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def parse_swaps(text: str) -> list[str]:
    lines = text.splitlines()[1:]
    return [_unescape(line.split()[0]) for line in lines if line.strip()]


def read_swaps(path: str = SWAPS_PATH) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return parse_swaps(f.read())
    except FileNotFoundError:
        return []


def read_attr(path: str, default: str = "") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return default


def sys_path(dev: str) -> str:
    """The sysfs directory of a block device given as "major:minor" (the real path)."""
    return os.path.realpath(os.path.join(SYS_DEV_BLOCK, dev))


def is_internal(dev: str) -> bool:
    """A fixed disk: not flagged removable, not on USB, not an SD/MMC card, not a loop device.

    Decided from sysfs alone, so the root helper needs no udev to refuse internal disks.
    """
    path = sys_path(dev)
    name = os.path.basename(path)
    if read_attr(os.path.join(path, "removable")) == "1":
        return False
    if name.startswith(("loop", "mmcblk")):
        return False
    return "/usb" not in path


def exists(dev: str) -> bool:
    return os.path.exists(os.path.join(SYS_DEV_BLOCK, dev))


def is_partition(dev: str) -> bool:
    return os.path.exists(os.path.join(SYS_DEV_BLOCK, dev, "partition"))


def size_bytes(dev: str) -> int:
    # sysfs reports the size in 512-byte units whatever the logical block size.
    return int(read_attr(os.path.join(SYS_DEV_BLOCK, dev, "size"), "0") or 0) * 512


def block_dev(block_sys_path: str) -> str:
    return read_attr(os.path.join(block_sys_path, "dev"))


def partitions(disk_sys_path: str) -> list[tuple[str, str]]:
    """(name, "major:minor") of each partition of a disk, in name order."""
    out: list[tuple[str, str]] = []
    try:
        names = sorted(os.listdir(disk_sys_path))
    except OSError:
        return out
    for name in names:
        child = os.path.join(disk_sys_path, name)
        if os.path.exists(os.path.join(child, "partition")):
            out.append((name, block_dev(child)))
    return out


def holders(block_sys_path: str) -> list[tuple[str, str]]:
    """(name, "major:minor") of every device stacked on this one (dm, LVM, md), recursively."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    pending = [block_sys_path]
    while pending:
        current = pending.pop()
        try:
            names = sorted(os.listdir(os.path.join(current, "holders")))
        except OSError:
            continue
        for name in names:
            if name in seen:
                continue
            seen.add(name)
            holder_path = os.path.realpath(os.path.join(SYS_CLASS_BLOCK, name))
            out.append((name, block_dev(holder_path)))
            pending.append(holder_path)
    return out


def family(dev: str) -> dict[str, str]:
    """Every device number that belongs to a disk: itself, its partitions, their holders.

    Maps "major:minor" to the kernel name (sda, sda1, dm-0 ...).
    """
    disk_path = sys_path(dev)
    members = {dev: os.path.basename(disk_path)}
    tops = [(os.path.basename(disk_path), dev, disk_path)]
    for name, part_dev in partitions(disk_path):
        members[part_dev] = name
        tops.append((name, part_dev, os.path.join(disk_path, name)))
    for _name, _dev, path in tops:
        for holder_name, holder_dev in holders(path):
            members[holder_dev] = holder_name
    return members


def rdev_of(path: str) -> str | None:
    """ "major:minor" of a block device node, or None when `path` is not one."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return dev_string(st.st_rdev) if stat.S_ISBLK(st.st_mode) else None


def mounts_of(devs: Iterable[str], mounts: Iterable[Mount]) -> list[Mount]:
    """Mounts whose device is one of `devs`, by mountinfo number or by the source's node."""
    wanted = set(devs)
    out: list[Mount] = []
    for m in mounts:
        if m.dev in wanted or (m.source.startswith("/dev/") and rdev_of(m.source) in wanted):
            out.append(m)
    return out


def swaps_of(devs: Iterable[str], swaps: Iterable[str]) -> list[str]:
    """Swap areas on `devs`: swap partitions, or swap files on a filesystem from them."""
    wanted = set(devs)
    out: list[str] = []
    for entry in swaps:
        try:
            st = os.stat(entry)
        except OSError:
            continue
        dev = dev_string(st.st_rdev) if stat.S_ISBLK(st.st_mode) else dev_string(st.st_dev)
        if dev in wanted:
            out.append(entry)
    return out


def disk_use(
    dev: str, *, mounts: list[Mount] | None = None, swaps: list[str] | None = None
) -> DiskUse:
    devs = family(dev)
    found_mounts = mounts_of(devs, read_mounts() if mounts is None else mounts)
    found_swaps = swaps_of(devs, read_swaps() if swaps is None else swaps)
    return DiskUse(tuple(found_mounts), tuple(found_swaps))


def read_udev_properties(dev: str, data_dir: str = UDEV_DATA_DIR) -> dict[str, str]:
    """The E: properties udev recorded for a block device (empty without udev)."""
    props: dict[str, str] = {}
    try:
        with open(os.path.join(data_dir, f"b{dev}"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("E:") and "=" in line:
                    key, _, value = line[2:].rstrip("\n").partition("=")
                    props[key] = value
    except OSError:
        pass
    return props


def read_serial(dev: str, *, udev_data_dir: str = UDEV_DATA_DIR) -> str:
    """The drive's serial: udev's ID_SERIAL_SHORT, else the nearest `serial` file in sysfs.

    For a USB card reader this is the reader's serial, so a swapped card is caught by its size.
    """
    serial = read_udev_properties(dev, udev_data_dir).get("ID_SERIAL_SHORT", "")
    if serial:
        return serial
    path = sys_path(dev)
    while path.startswith("/sys/devices/") and path != "/sys/devices":
        value = read_attr(os.path.join(path, "serial"))
        if value:
            return value
        path = os.path.dirname(path)
    return ""


def loop_backing_file(block_sys_path: str) -> str:
    return read_attr(os.path.join(block_sys_path, "loop", "backing_file"))
