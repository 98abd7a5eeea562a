"""The drives a command names, looked up on a thread from its start while the rest of it loads.

Finding a drive loads udev's and the mount table's libraries and asks both (tens of
milliseconds on a cold start); `flash` knows its targets before anything else, so it starts
them here and `resolve_target` takes a result only for the same device node, still the same
device (its device number); anything else, or a lookup that failed, is looked up again where
it is needed, which reports what is wrong. Standard library plus flasher.drives.discovery
(loaded on the thread) and flasher.models.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from flasher.models import Drive


class EarlyDrives:
    """`find_drive` of each of `paths`, started now."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._found: dict[str, tuple[int, Drive]] = {}
        self._thread = threading.Thread(
            target=self._run, args=(tuple(paths),), name="flasher-early-drives", daemon=True
        )
        self._thread.start()

    def _run(self, paths: tuple[str, ...]) -> None:
        from flasher.drives.discovery import find_drive

        for path in paths:
            try:
                rdev = os.stat(path).st_rdev
                drive = find_drive(path)
            except Exception:  # looked up again where it is needed, and reported there
                continue
            if drive is not None:
                self._found[path] = (rdev, drive)

    def take(self, path: str, rdev: int) -> Drive | None:
        """The drive found at `path` if it was the device `rdev`; else None."""
        self._thread.join()
        found = self._found.get(path)
        return found[1] if found is not None and found[0] == rdev else None
