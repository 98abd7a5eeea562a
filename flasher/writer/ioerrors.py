"""Typed errors for failed I/O on a target: which operation, at which byte, and what to do.

Standard library plus flasher.errors only (the root helper uses it).
"""

from __future__ import annotations

import errno
import os

from flasher.errors import DriveGone, FlasherError, WriteFailed

GONE_ERRNOS = frozenset({errno.ENODEV, errno.ENXIO, errno.ENOMEDIUM, errno.ESHUTDOWN})


def io_error(err: OSError, path: str, doing: str, offset: int | None = None) -> FlasherError:
    """A typed error for an OSError on a target, naming the operation and the byte offset."""
    where = f" at byte {offset}" if offset is not None else ""
    code = err.errno or 0
    if code in GONE_ERRNOS:
        return DriveGone(
            f"{path} disappeared while {doing}{where}.",
            hint="Check that the card and reader are firmly connected, then try again.",
            target=path,
            errno=code,
            offset=offset,
        )
    return WriteFailed(
        f"{path}: {os.strerror(code)} while {doing}{where}.",
        hint=_hint_for(code, path),
        target=path,
        errno=code,
        offset=offset,
    )


def _hint_for(code: int, path: str) -> str:
    """What to do next, by what went wrong and whether the target is a drive or a file."""
    if code == errno.ENOSPC:
        return "The disk holding this file is full; free some space or choose another folder."
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "This location cannot be written; check its permissions or choose another."
    if not path.startswith("/dev/"):
        return "Check the file's folder and the disk it is on, then try again."
    return "The card may be faulty, worn out or counterfeit; try another card or reader."
