"""A test-only target policy: regular files under one directory act as disks.

Handed to the writer helper in-process (InProcessLauncher), so the whole protocol, engine and
verify path runs without root. Production code has no way to select it: the helper's `main()`
always uses BlockDevicePolicy.
"""

from __future__ import annotations

import os
from pathlib import Path

from flasher.error_codes import ProblemCode
from flasher.errors import DriveRejected
from flasher.writer.blockdev import LogFn, OpenTarget, open_regular_file
from flasher.writer.protocol import TargetSpec


class RegularFilePolicy:
    """Allows existing regular files inside `root_dir` whose size matches the confirmed one."""

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        self.root_dir = os.path.realpath(root_dir)

    def open_target(self, spec: TargetSpec, log: LogFn) -> OpenTarget:
        real = os.path.realpath(spec.path)
        if not real.startswith(self.root_dir + os.sep):
            # What the production policy says of anything that is not a disk.
            raise DriveRejected(
                f"{spec.path} is outside the test directory.",
                target=spec.path,
                problem=ProblemCode.NOT_BLOCK_DEVICE,
            )
        target = open_regular_file(real, label=spec.path)
        if target.size_bytes != spec.size_bytes:
            target.close()
            raise DriveRejected(
                f"{spec.path} now holds {target.size_bytes} bytes, not {spec.size_bytes}.",
                target=spec.path,
                problem=ProblemCode.SIZE_CHANGED,
            )
        log(f"opened test file {Path(real).name}")
        return target


class WrappingSectors:
    """A fake-capacity card: claims `advertised_bytes`, stores `real_bytes` in a file, and
    either wraps every offset modulo the real size (the controller drops address bits) or,
    with `vanish`, drops writes past it and reads zeros there."""

    def __init__(
        self, backing: str, advertised_bytes: int, real_bytes: int, *, vanish: bool = False
    ) -> None:
        self.fd = os.open(backing, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.ftruncate(self.fd, real_bytes)
        self.advertised_bytes = advertised_bytes
        self.real_bytes = real_bytes
        self.vanish = vanish

    @property
    def size_bytes(self) -> int:
        return self.advertised_bytes

    def read_at(self, offset: int, length: int) -> bytes:
        if self.vanish and offset >= self.real_bytes:
            return bytes(length)
        return os.pread(self.fd, length, offset % self.real_bytes)

    def write_at(self, offset: int, data: bytes) -> None:
        if self.vanish and offset >= self.real_bytes:
            return
        os.pwrite(self.fd, data, offset % self.real_bytes)

    def flush(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FakeCardPolicy:
    """Every target is a fake-capacity card (WrappingSectors) backed by one file; the probe
    reaches it through `open_sectors`, as it reaches a real card through `open_target`."""

    def __init__(self, backing: str, real_bytes: int, *, vanish: bool = False) -> None:
        self.backing = backing
        self.real_bytes = real_bytes
        self.vanish = vanish

    def open_target(self, spec: TargetSpec, log: LogFn) -> OpenTarget:
        raise DriveRejected("a fake card only takes the probe", target=spec.path, problem="fake")

    def open_sectors(self, spec: TargetSpec, log: LogFn) -> WrappingSectors:
        log("opened a fake-capacity test card")
        return WrappingSectors(self.backing, spec.size_bytes, self.real_bytes, vanish=self.vanish)
