"""Opening write targets safely: the root helper's own checks, unmounting and exclusive open.

Standard library plus flasher.errors and flasher.writer modules only (it runs as root).

`BlockDevicePolicy` is the only policy the helper's `main()` uses: a target must be a whole-disk
block device whose device number, size and serial still match what the person confirmed, that
holds no mounted system filesystem or swap, and that is removable (a USB drive, an SD card)
unless the request marks that internal disk as confirmed on its own. The checked node is then
pinned with O_PATH | O_NOFOLLOW and its descriptor checked (block device, same device number)
before anything is unmounted; its partitions are unmounted (a busy one is refused, never lazily
detached) and the pinned inode is opened O_EXCL | O_DIRECT through /proc/self/fd. Regular-file
targets exist only through another `TargetPolicy` object handed over in-process (tests), or
through `open_regular_file` in the unprivileged process, never through a flag or variable.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flasher.errors import DriveGone, DriveRejected, WriteFailed
from flasher.writer import sysblock
from flasher.writer.filetarget import open_file_target
from flasher.writer.protocol import TargetSpec

BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKFLSBUF = 0x1261
BLKRRPART = 0x125F
FILE_BLOCK_BYTES = 4096

LogFn = Callable[[str], None]


class TargetKind(enum.StrEnum):
    BLOCK = "block"
    FILE = "file"


@dataclass
class OpenTarget:
    """A target opened for writing. `path` is the name the person confirmed (used in events)."""

    path: str
    device_path: str
    fd: int
    kind: TargetKind
    size_bytes: int
    block_size: int
    direct: bool

    def drop_cache(self) -> None:
        """Push out cached pages so the read-back comes from the medium, not from memory."""
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if self.kind is TargetKind.BLOCK:
            fcntl.ioctl(self.fd, BLKFLSBUF)

    def reread_partitions(self) -> str | None:
        """Ask the kernel to re-read the new partition table; the reason if it declined."""
        if self.kind is not TargetKind.BLOCK:
            return None
        try:
            fcntl.ioctl(self.fd, BLKRRPART)
        except OSError as err:
            return os.strerror(err.errno or 0)
        return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class TargetPolicy(Protocol):
    """Decides whether a requested target may be written, and opens it."""

    def open_target(self, spec: TargetSpec, log: LogFn) -> OpenTarget: ...


def _reject(spec: TargetSpec, message: str, problem: str, hint: str | None = None) -> DriveRejected:
    return DriveRejected(message, hint=hint, target=spec.path, problem=problem)


def _open_flags_direct(path: str, flags: int) -> tuple[int, bool]:
    """Open a device with O_DIRECT, falling back to buffered I/O where it is refused."""
    try:
        return os.open(path, flags | os.O_DIRECT), True
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
    return os.open(path, flags), False


def _libc_umount(mountpoint: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(mountpoint), 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), mountpoint)


def block_size_of(fd: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(fd, BLKSSZGET, b"\0" * 4))[0])


def size_of(fd: int) -> int:
    return int(struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8))[0])


class BlockDevicePolicy:
    """Whole-disk block devices only, checked against the confirmed identity before opening."""

    def __init__(self, *, umount: Callable[[str], None] = _libc_umount) -> None:
        self._umount = umount

    def resolve(self, spec: TargetSpec, log: LogFn) -> str:
        """The real device node behind `spec.path`, after every check that needs no opening."""
        if not os.path.isabs(spec.path):
            raise _reject(spec, f"{spec.path} is not an absolute path.", "not_absolute")
        try:
            lst = os.lstat(spec.path)
        except FileNotFoundError:
            raise DriveGone(
                f"{spec.path} is gone.",
                hint="Insert the drive again and pick it from a fresh list.",
                target=spec.path,
            ) from None
        real = os.path.realpath(spec.path)
        if stat.S_ISLNK(lst.st_mode):
            log(f"{spec.path} resolves to {real}")
        try:
            st = os.stat(real)
        except OSError:
            raise DriveGone(f"{spec.path} is gone.", target=spec.path) from None
        if not stat.S_ISBLK(st.st_mode):
            raise _reject(spec, f"{spec.path} is not a block device.", "not_block_device")
        dev = sysblock.dev_string(st.st_rdev)
        if sysblock.is_partition(dev):
            parent = os.path.basename(os.path.dirname(sysblock.sys_path(dev)))
            raise _reject(
                spec,
                f"{spec.path} is a partition, not a whole disk.",
                "partition",
                f"Pick the whole disk, /dev/{parent}.",
            )
        use = sysblock.disk_use(dev)
        if use.is_system:
            raise _reject(
                spec,
                f"{spec.path} is a system disk: {'; '.join(use.reasons())}.",
                "system",
                "Pick a removable card or USB drive.",
            )
        if sysblock.is_internal(dev) and not spec.allow_internal:
            raise _reject(
                spec,
                f"{spec.path} is an internal disk, not a removable card or USB drive.",
                "internal",
                "Internal disks are written only when they are confirmed on their own.",
            )
        if dev != spec.dev:
            raise _reject(
                spec,
                f"{spec.path} is now device {dev}, not the {spec.dev} that was confirmed.",
                "device_changed",
                "The drive list changed; pick the drive again.",
            )
        size_bytes = sysblock.size_bytes(dev)
        if size_bytes != spec.size_bytes:
            raise _reject(
                spec,
                f"{spec.path} now holds {size_bytes} bytes, not the {spec.size_bytes} confirmed.",
                "size_changed",
                "The card may have been swapped; pick the drive again.",
            )
        serial = sysblock.read_serial(dev)
        if serial != spec.serial:
            raise _reject(
                spec,
                f"{spec.path} now has serial {serial or '(none)'}, not the confirmed "
                f"{spec.serial or '(none)'}.",
                "serial_changed",
                "The drive may have been swapped; pick the drive again.",
            )
        if sysblock.read_attr(os.path.join(sysblock.sys_path(dev), "ro")) == "1":
            raise _reject(
                spec,
                f"{spec.path} is write-protected.",
                "read_only",
                "Slide the SD card's lock switch to unlocked and insert it again.",
            )
        return real

    def _unmount_all(self, spec: TargetSpec, log: LogFn) -> None:
        use = sysblock.disk_use(spec.dev)
        # Deepest first, so nested mounts come off before their parents.
        for mount in sorted(use.mounts, key=lambda m: m.mountpoint.count("/"), reverse=True):
            try:
                self._umount(mount.mountpoint)
            except OSError as err:
                if err.errno == errno.EINVAL:
                    continue  # already gone
                raise _reject(
                    spec,
                    f"{mount.mountpoint} ({mount.source}) on {spec.path} cannot be unmounted: "
                    f"{os.strerror(err.errno or 0)}.",
                    "busy",
                    "Close the programs and terminals using it, then try again.",
                ) from None
            log(f"unmounted {mount.mountpoint}")
        left = sysblock.disk_use(spec.dev)
        if left.mounts or left.swaps:
            still = ", ".join([m.mountpoint for m in left.mounts] + list(left.swaps))
            raise _reject(spec, f"{spec.path} is still in use: {still}.", "busy")

    def _pin(self, spec: TargetSpec, real: str) -> int:
        """An O_PATH descriptor of the checked node, proven to be the confirmed block device.

        Opened without following links, so a node swapped for a symlink after the checks is
        refused; everything after this (unmounting, the real open) goes through this descriptor.
        """
        try:
            path_fd = os.open(real, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DriveGone(f"{spec.path} is gone.", target=spec.path) from None
        st = os.fstat(path_fd)
        if not stat.S_ISBLK(st.st_mode) or sysblock.dev_string(st.st_rdev) != spec.dev:
            os.close(path_fd)
            raise _reject(spec, f"{spec.path} changed while being opened.", "device_changed")
        return path_fd

    def open_target(self, spec: TargetSpec, log: LogFn) -> OpenTarget:
        real = self.resolve(spec, log)
        path_fd = self._pin(spec, real)
        try:
            self._unmount_all(spec, log)
            # Re-opening the pinned descriptor through /proc opens that very inode.
            fd, direct = _open_flags_direct(
                f"/proc/self/fd/{path_fd}", os.O_RDWR | os.O_EXCL | os.O_CLOEXEC
            )
        except OSError as err:
            if err.errno == errno.EBUSY:
                holders = [name for name, _dev in sysblock.holders(sysblock.sys_path(spec.dev))]
                by = f" (held by {', '.join(holders)})" if holders else ""
                raise _reject(
                    spec,
                    f"{spec.path} is in use by another program{by}.",
                    "busy",
                    "Close programs using it (or deactivate its LVM/RAID volumes) and retry.",
                ) from None
            if err.errno == errno.EROFS:
                raise _reject(spec, f"{spec.path} is write-protected.", "read_only") from None
            if err.errno in (errno.ENOENT, errno.ENXIO, errno.ENODEV, errno.ENOMEDIUM):
                raise DriveGone(f"{spec.path} is gone.", target=spec.path) from None
            raise WriteFailed(
                f"{spec.path} cannot be opened: {os.strerror(err.errno or 0)}.",
                target=spec.path,
                errno=err.errno,
            ) from None
        finally:
            os.close(path_fd)
        try:
            st = os.fstat(fd)
            # The node could have been replaced between the checks and the open.
            if sysblock.dev_string(st.st_rdev) != spec.dev or size_of(fd) != spec.size_bytes:
                raise _reject(spec, f"{spec.path} changed while being opened.", "device_changed")
            target = OpenTarget(
                path=spec.path,
                device_path=real,
                fd=fd,
                kind=TargetKind.BLOCK,
                size_bytes=spec.size_bytes,
                block_size=block_size_of(fd),
                direct=direct,
            )
        except BaseException:
            os.close(fd)
            raise
        log(f"opened {real} ({'direct' if direct else 'buffered'} I/O)")
        return target


def open_regular_file(
    path: str, *, size_bytes: int | None = None, create: bool = False, label: str | None = None
) -> OpenTarget:
    """A regular file as a target, for the unprivileged process (or a test policy).

    Opened as `filetarget.open_file_target` does (no foreign symlinks, never under /dev, mode
    0600). With `create`, the file is created or emptied and sized to `size_bytes`, so ranges
    that are not written read back as zeros (and stay holes on disk).
    """
    fd, direct = open_file_target(path, create=create)
    try:
        if create and size_bytes is not None:
            os.ftruncate(fd, size_bytes)
        return OpenTarget(
            path=label or path,
            device_path=path,
            fd=fd,
            kind=TargetKind.FILE,
            size_bytes=os.fstat(fd).st_size,
            block_size=FILE_BLOCK_BYTES,
            direct=direct,
        )
    except BaseException:
        os.close(fd)
        raise
