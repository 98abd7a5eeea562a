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
