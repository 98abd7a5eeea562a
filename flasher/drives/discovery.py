"""Drive discovery: whole disks from udev (pyudev) and sysfs, with mounts and swaps from procfs.

`list_drives()` returns the drives a person may flash; `list_drives(all=True)` adds the system
drives, flagged. Mount, swap, holder and serial facts come from flasher.writer.sysblock, the same
code the root helper uses to re-check a target, so both sides agree. Never prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import pyudev

from flasher.models import Drive, DrivePartition
from flasher.writer import sysblock

BY_PATH_PREFIX = "/dev/disk/by-path/"
BY_ID_PREFIX = "/dev/disk/by-id/"
LOOP_MAJOR = 7


@dataclass(frozen=True)
class SystemState:
    """The mount table and swap list, read once per listing."""

    mounts: tuple[sysblock.Mount, ...]
    swaps: tuple[str, ...]

    @classmethod
    def read(cls) -> SystemState:
        # A mount whose mountinfo number is anonymous (btrfs) still maps to its drive:
        # sysblock.mounts_of also matches the mount's source node.
        return cls(tuple(sysblock.read_mounts()), tuple(sysblock.read_swaps()))


def list_drives(
    all: bool = False,
    *,
    context: pyudev.Context | None = None,
) -> list[Drive]:
    """Whole-disk drives, sorted by path; system and internal drives only with `all=True`."""
    context = context or pyudev.Context()
    state = SystemState.read()
    drives: list[Drive] = []
    for device in context.list_devices(subsystem="block", DEVTYPE="disk"):
        drive = drive_from_device(device, state)
        if drive is not None and (all or not (drive.system or drive.internal)):
            drives.append(drive)
    return sorted(drives, key=lambda d: d.path)


def find_drive(path: str, *, context: pyudev.Context | None = None) -> Drive | None:
    """The drive at `path` (a node or a /dev/disk/... link) as it is now, or None if gone."""
    dev = sysblock.rdev_of(path)
    if dev is None:
        return None
    context = context or pyudev.Context()
    try:
        major, minor = (int(x) for x in dev.split(":"))
        device = pyudev.Devices.from_device_number(context, "block", os.makedev(major, minor))
    except (pyudev.DeviceNotFoundError, ValueError):
        return None
    return drive_from_device(device, SystemState.read())


def _is_candidate(device: pyudev.Device) -> bool:
    if device.properties.get("DEVTYPE") != "disk" or not device.device_node:
        return False
    if device.properties.get("ID_CDROM") == "1":
        return False
    path = device.sys_path
    if "/devices/virtual/" in path:
        # ram, zram, dm, md and nbd are not flashable media; loop devices are, when attached.
        return os.path.basename(path).startswith("loop") and bool(sysblock.loop_backing_file(path))
    return True


def bus_of(device_sys_path: str, id_bus: str = "") -> str:
    """The transport, trusting the sysfs topology over udev's ID_BUS for usb/mmc/nvme."""
    if "/devices/virtual/block/loop" in device_sys_path:
        return "loop"
    for marker, bus in (("/usb", "usb"), ("/mmc_host/", "mmc"), ("/nvme/", "nvme")):
        if marker in device_sys_path:
            return bus
    if id_bus:
        return id_bus
    return "virtio" if "/virtio" in device_sys_path else ""


def _decode_udev(value: str) -> str:
    # ID_*_ENC values escape anything unusual as \xNN; decode and tidy the padding.
    out = bytearray()
    i = 0
    raw = value.encode("utf-8", "surrogateescape")
    while i < len(raw):
        if raw[i : i + 2] == b"\\x" and len(raw) >= i + 4:
            try:
                out.append(int(raw[i + 2 : i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return " ".join(out.decode("utf-8", "replace").split())


def _udev_text(device: pyudev.Device, key: str) -> str:
    encoded = device.properties.get(f"{key}_ENC")
    if encoded:
        return _decode_udev(encoded)
    return " ".join(str(device.properties.get(key, "")).replace("_", " ").split())


def _sys_text(path: str, *names: str) -> str:
    for name in names:
        value = sysblock.read_attr(os.path.join(path, name))
        if value:
            return " ".join(value.split())
    return ""


def _partition_entries(
    device: pyudev.Device, disk_dev: str, state: SystemState
) -> tuple[DrivePartition, ...]:
    entries: list[DrivePartition] = []
    udev_children = {
        child.sys_name: child
        for child in device.children
        if child.subsystem == "block" and child.properties.get("DEVTYPE") == "partition"
    }
    members = [(device.sys_name, disk_dev, device.sys_path)]
    members += [
        (name, dev, os.path.join(device.sys_path, name))
        for name, dev in sysblock.partitions(device.sys_path)
    ]
    for name, dev, path in members:
        holders = sysblock.holders(path)
        devs = [dev, *(h_dev for _h, h_dev in holders)]
        mounts = sysblock.mounts_of(devs, state.mounts)
        swaps = sysblock.swaps_of(devs, state.swaps)
        mountpoints = tuple(dict.fromkeys(m.mountpoint for m in mounts))
        if swaps:
            mountpoints += (sysblock.SWAP_MOUNTPOINT,)
        child = udev_children.get(name) if name != device.sys_name else device
        fstype = (child.properties.get("ID_FS_TYPE") if child is not None else None) or (
            mounts[0].fstype if mounts else None
        )
        label = child.properties.get("ID_FS_LABEL") if child is not None else None
        is_disk = name == device.sys_name
        if is_disk and not (mountpoints or holders):
            continue  # the disk itself only appears when it is used without a partition table
        entries.append(
            DrivePartition(
                path=f"/dev/{name}",
                mountpoints=mountpoints,
                fstype=fstype or None,
                label=label or None,
                dev=dev,
                holders=tuple(h_dev for _h, h_dev in holders),
            )
        )
    return tuple(entries)


def _links(device: pyudev.Device, prefix: str) -> tuple[str, ...]:
    links: Iterable[str] = device.device_links
    return tuple(sorted(link for link in links if link.startswith(prefix)))


def drive_from_device(device: pyudev.Device, state: SystemState) -> Drive | None:
    """A Drive for a udev block device, or None when it is not a flashable whole disk."""
    if not _is_candidate(device):
        return None
    path = device.sys_path
    dev = f"{device.properties.get('MAJOR')}:{device.properties.get('MINOR')}"
    size_bytes = sysblock.size_bytes(dev)
    if size_bytes <= 0:
        return None  # a card reader with no card in it
    bus = bus_of(path, str(device.properties.get("ID_BUS", "")))
    removable = sysblock.read_attr(os.path.join(path, "removable")) == "1" or bus in ("usb", "mmc")
    partitions = _partition_entries(device, dev, state)
    use = sysblock.disk_use(dev, mounts=list(state.mounts), swaps=list(state.swaps))
    internal = bus != "loop" and not removable
    vendor = _udev_text(device, "ID_VENDOR") or _sys_text(path, "device/vendor")
    if vendor.startswith("0x"):
        vendor = ""  # virtio reports a PCI vendor number here, not a name
    model = _udev_text(device, "ID_MODEL") or _sys_text(path, "device/model", "device/name")
    if bus == "loop":
        model = model or "Loop device"
        description = sysblock.loop_backing_file(path)
    else:
        description = " ".join(p for p in (vendor, model) if p)
    queue = os.path.join(path, "queue")
    return Drive(
        path=str(device.device_node),
        size_bytes=size_bytes,
        dev=dev,
        description=description,
        vendor=vendor,
        model=model,
        serial=sysblock.read_serial(dev),
        bus=bus,
        removable=removable,
        read_only=sysblock.read_attr(os.path.join(path, "ro")) == "1",
        system=use.is_system,
        internal=internal,
        logical_block_size=int(
            sysblock.read_attr(os.path.join(queue, "logical_block_size"), "512")
        ),
        physical_block_size=int(
            sysblock.read_attr(os.path.join(queue, "physical_block_size"), "512")
        ),
        by_path=_links(device, BY_PATH_PREFIX),
        by_id=_links(device, BY_ID_PREFIX),
        partitions=partitions,
    )
