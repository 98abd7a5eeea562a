"""Power off (eject) the cards that were written and verified, so the user can pull them out:
`udisksctl power-off` (udisks2, as the desktop's file manager does), else `eject`. Image files
and loop devices are never ejected, nor a card that failed or was not verified.

Pure Python (no Qt): runs on a worker. Imports the standard library and core values only.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence

from flasher.models import Drive
from flasher.writer.job import TargetResult

EJECT_TIMEOUT_S = 20.0


def ejectable(drives: Mapping[str, Drive], results: Sequence[TargetResult]) -> list[str]:
    """The verified cards that are real removable drives (not files, not loop devices)."""
    paths = []
    for result in results:
        drive = drives.get(result.target)
        if (
            drive is not None
            and result.ok
            and result.verified
            and not drive.is_file
            and drive.bus != "loop"
            and not drive.system
        ):
            paths.append(result.target)
    return paths


def eject_command(path: str) -> list[str] | None:
    if shutil.which("udisksctl"):
        return ["udisksctl", "power-off", "--no-user-interaction", "-b", path]
    if shutil.which("eject"):
        return ["eject", path]
    return None


def eject(paths: Sequence[str]) -> list[str]:
    """Eject each of `paths`; the ones that were ejected (a failure leaves the card as it is)."""
    done = []
    for path in paths:
        command = eject_command(path)
        if command is None:
            break
        try:
            finished = subprocess.run(
                command, capture_output=True, timeout=EJECT_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if finished.returncode == 0:
            done.append(path)
    return done
