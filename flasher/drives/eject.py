"""Power off (eject) cards that were written and verified, so they can be pulled out:
`udisksctl power-off` (udisks2, as the desktop's file manager does), else `eject`. Image files,
loop devices and system drives are never ejected, nor a card that failed or was not verified.
Shared by the desktop app and the bench station.

The tool gets the caller's environment without its secrets (flasher.childenv). Imports the
standard library and core values only; never prints.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence

from flasher.childenv import child_environment
from flasher.models import Drive
from flasher.writer.job import TargetResult

EJECT_TIMEOUT_S = 20.0


def eject_refusal(drive: Drive) -> str | None:
    """Why `drive` is never powered off (None: it may be)."""
    if drive.is_file:
        return "an image file is not a drive"
    if drive.bus == "loop":
        return "a loop device has nothing to power off"
    if drive.system:
        return "the system uses this drive"
    return None


def ejectable(drives: Mapping[str, Drive], results: Sequence[TargetResult]) -> list[str]:
    """The verified cards that are real removable drives (not files, not loop devices)."""
    paths = []
    for result in results:
        drive = drives.get(result.target)
        if drive is not None and result.ok and result.verified and eject_refusal(drive) is None:
            paths.append(result.target)
    return paths


def eject_command(path: str) -> list[str] | None:
    if shutil.which("udisksctl"):
        return ["udisksctl", "power-off", "--no-user-interaction", "-b", path]
    if shutil.which("eject"):
        return ["eject", path]
    return None


def power_off(path: str) -> str | None:
    """Power off the drive at `path`; None when it was, else why not (the card stays as it
    is)."""
    command = eject_command(path)
    if command is None:
        return "neither udisksctl nor eject is installed"
    try:
        finished = subprocess.run(
            command,
            capture_output=True,
            timeout=EJECT_TIMEOUT_S,
            check=False,
            env=child_environment(),  # never the caller's keys or tokens
        )
    except subprocess.TimeoutExpired:
        return f"{command[0]} did not answer within {EJECT_TIMEOUT_S:.0f} s"
    except OSError as err:
        return f"{command[0]} could not be started: {err.strerror or err}"
    if finished.returncode != 0:
        said = finished.stderr.decode(errors="replace").strip().splitlines()
        return f"{command[0]} failed" + (f": {said[-1]}" if said else "")
    return None


def eject(paths: Sequence[str]) -> list[str]:
    """Eject each of `paths`; the ones that were ejected (a failure leaves the card as it is)."""
    return [path for path in paths if power_off(path) is None]
