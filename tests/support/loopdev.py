"""Loop devices for tests: attach backing files (optionally partitioned or on a small tmpfs),
mount their partitions under /mnt, and always clean up.

Only devices this module attached are ever detached, and only while their backing file is still
the one it attached, so parallel test runs and other users' loop devices are left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

MiB = 1024 * 1024
MOUNT_ROOT = "/mnt"


def loop_unavailable_reason() -> str | None:
    """Why loop-device tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root for loop devices"
    for tool in ("losetup", "partx", "sfdisk"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control (loop driver missing)"
    return None


def require_loop() -> None:
    reason = loop_unavailable_reason()
    if reason:
        pytest.skip(reason)


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class LoopDevice:
    path: str
    backing: Path
    size_bytes: int

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def dev(self) -> str:
        rdev = os.stat(self.path).st_rdev
        return f"{os.major(rdev)}:{os.minor(rdev)}"

    def partition(self, number: int) -> str:
        return f"{self.path}p{number}"

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes as the device holds them (through the backing file, which the loop writes to)."""
        with open(self.backing, "rb") as f:
            f.seek(offset)
            return f.read(self.size_bytes - offset if length is None else length)

    def poke(self, offset: int, data: bytes) -> None:
        """Change bytes on the medium behind the device's back (a failing card)."""
        with open(self.backing, "r+b") as f:
            f.seek(offset)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def attached(self) -> bool:
        backing = Path("/sys/block", self.name, "loop", "backing_file")
        try:
            return backing.read_text().strip() == str(self.backing)
        except OSError:
            return False


class LoopDevices:
    """Creates loop devices in `directory` and tears everything down on `close()`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._devices: list[LoopDevice] = []
        self._mounts: list[str] = []
        self._dirs: list[str] = []

    def create(
        self,
        size_bytes: int,
        *,
        fill: bytes | None = None,
        sfdisk_script: str | None = None,
        backing_dir: Path | None = None,
        read_only: bool = False,
    ) -> LoopDevice:
        """Attach a new loop device over a fresh backing file of `size_bytes`.

        `fill` repeats a pattern over the whole file (so skipped or zeroed ranges show);
        `sfdisk_script` writes a partition table and makes the partition nodes appear;
        `read_only` attaches it write-protected, like a locked SD card.
        """
        folder = backing_dir or self.directory
        fd, name = tempfile.mkstemp(prefix="loop-", suffix=".img", dir=folder)
        backing = Path(name)
        with open(fd, "r+b") as f:
            if fill:
                block = (fill * (MiB // len(fill) + 1))[:MiB]
                for _ in range(size_bytes // MiB):
                    f.write(block)
            f.truncate(size_bytes)
        if sfdisk_script is not None:
            subprocess.run(
                ["sfdisk", "-q", str(backing)], input=sfdisk_script, text=True, check=True
            )
        flags = ["-r"] if read_only else []
        path = _run("losetup", "--show", "-f", "-P", *flags, str(backing))
        device = LoopDevice(path, backing, size_bytes)
        self._devices.append(device)
        if sfdisk_script is not None and not os.path.exists(device.partition(1)):
            # Some kernels do not scan loop partitions; add them explicitly.
            _run("partx", "-a", path)
        return device

    def create_on_tmpfs(self, size_bytes: int, *, tmpfs_bytes: int) -> LoopDevice:
        """A loop device whose medium runs out of space after `tmpfs_bytes`: writes past that
        fail with an I/O error, like a card dying mid-write."""
        return self.create(size_bytes, backing_dir=self.tmpfs(tmpfs_bytes))

    def tmpfs(self, size_bytes: int) -> Path:
        """A fresh tmpfs of `size_bytes`, unmounted on `close()`."""
        mountpoint = self.mount_dir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", mountpoint], check=True
        )
        self._mounts.append(mountpoint)
        return Path(mountpoint)

    def mount_dir(self) -> str:
        path = tempfile.mkdtemp(prefix="flasher-test-", dir=MOUNT_ROOT)
        self._dirs.append(path)
        return path

    def mount(self, source: str, mountpoint: str | None = None) -> str:
        """Mount `source` (under /mnt unless told otherwise), unmounted again at close."""
        target = mountpoint or self.mount_dir()
        subprocess.run(["mount", source, target], check=True, capture_output=True)
        self._mounts.append(target)
        return target

    def detach(self, device: LoopDevice) -> None:
        if device.attached():
            subprocess.run(["losetup", "-d", device.path], check=False, capture_output=True)

    def close(self) -> None:
        for mountpoint in reversed(self._mounts):
            if os.path.ismount(mountpoint) and _backing_mount(mountpoint, self._devices):
                subprocess.run(["umount", mountpoint], check=False, capture_output=True)
        for device in reversed(self._devices):
            for _ in range(50):
                self.detach(device)
                if not device.attached():
                    break
                time.sleep(0.05)
        for mountpoint in reversed(self._mounts):
            # A detached loop device lets go of its backing file a moment later.
            for _ in range(50):
                if not os.path.ismount(mountpoint):
                    break
                subprocess.run(["umount", mountpoint], check=False, capture_output=True)
                time.sleep(0.05)
        for path in reversed(self._dirs):
            with contextlib.suppress(OSError):
                os.rmdir(path)

    def __enter__(self) -> LoopDevices:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _backing_mount(mountpoint: str, devices: list[LoopDevice]) -> bool:
    # Filesystems on our loop devices come off first; the tmpfs holding a backing file stays
    # until its loop device is detached.
    return not any(str(d.backing).startswith(mountpoint + "/") for d in devices)
