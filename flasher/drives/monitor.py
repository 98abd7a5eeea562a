"""Hotplug: a stoppable stream of drive add/remove/change events, from udev and the mount table.

Any block uevent (a card inserted in a reader is a "change" of the reader's disk, attaching a
loop device too) or any change of /proc/self/mountinfo triggers a fresh listing, which is
compared with the last one; the differences become DriveEvent values carrying Drive values.
Uses pyudev's netlink monitor: udev's events when udevd runs (links and properties are ready
then), the kernel's otherwise. Never prints.
"""

from __future__ import annotations

import contextlib
import enum
import os
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyudev

from flasher.drives.discovery import list_drives
from flasher.models import Drive
from flasher.writer import sysblock

UDEV_CONTROL = "/run/udev/control"


class DriveAction(enum.StrEnum):
    ADD = "add"
    REMOVE = "remove"
    CHANGE = "change"


@dataclass(frozen=True)
class DriveEvent:
    action: DriveAction
    drive: Drive


def default_source() -> str:
    """ "udev" when the udev daemon runs (its events come after rules ran), else "kernel"."""
    return "udev" if os.path.exists(UDEV_CONTROL) else "kernel"


class DriveMonitor:
    """Iterate to receive DriveEvents until `stop()`; or `start(callback)` on a thread.

    With `initial=True` the drives present at start come first, as ADD events. System drives
    are left out unless `include_system`.
    """

    def __init__(
        self,
        *,
        include_system: bool = False,
        initial: bool = True,
        source: str | None = None,
        context: pyudev.Context | None = None,
    ) -> None:
        self._context = context or pyudev.Context()
        self._include_system = include_system
        self._initial = initial
        self._monitor = pyudev.Monitor.from_netlink(
            self._context, source=source or default_source()
        )
        self._monitor.filter_by("block")
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._known: dict[str, Drive] = {}
        self._primed = False

    def _listing(self) -> dict[str, Drive]:
        return {d.path: d for d in list_drives(all=self._include_system, context=self._context)}

    def _diff(self) -> list[DriveEvent]:
        current = self._listing()
        events = [
            DriveEvent(DriveAction.REMOVE, drive)
            for path, drive in self._known.items()
            if path not in current
        ]
        for path, drive in current.items():
            before = self._known.get(path)
            if before is None:
                events.append(DriveEvent(DriveAction.ADD, drive))
            elif before != drive:
                events.append(DriveEvent(DriveAction.CHANGE, drive))
        self._known = current
        return events

    def _prime(self) -> list[DriveEvent]:
        """Start listening, then take the first listing: nothing can slip in between."""
        if self._primed:
            return []
        self._primed = True
        self._monitor.start()
        if self._initial:
            return self._diff()
        self._known = self._listing()
        return []

    def events(self) -> Iterator[DriveEvent]:
        """Block until something changes; ends after `stop()`."""
        yield from self._prime()
        poller = select.poll()
        poller.register(self._monitor.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        with open(sysblock.MOUNTINFO_PATH, "rb") as mountinfo:
            # The kernel flags mountinfo with POLLPRI whenever the mount table changes.
            poller.register(mountinfo.fileno(), select.POLLPRI)
            while not self._stopped.is_set():
                ready = poller.poll()
                if self._stopped.is_set():
                    return
                for fd, _mask in ready:
                    if fd == mountinfo.fileno():
                        mountinfo.seek(0)
                        mountinfo.read()
                while self._monitor.poll(timeout=0) is not None:
                    pass  # drain the burst: one listing covers all of it
                yield from self._diff()

    __iter__ = events

    def start(self, callback: Callable[[DriveEvent], None]) -> None:
        """Deliver events to `callback` on a daemon thread until `stop()`."""

        first = self._prime()  # on the caller's thread: drives attached after start() count

        def pump() -> None:
            for event in first:
                callback(event)
            for event in self.events():
                callback(event)

        self._thread = threading.Thread(target=pump, name="flasher-drive-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def close(self) -> None:
        self.stop()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> DriveMonitor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
