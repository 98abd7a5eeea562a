"""Asks the kernel to read, all at once, the code files a command is about to load.

On a cold start (after a reboot, or caches dropped) every module a command imports is a small
read of its own, waited for in turn: a flash loads ~200 of them (its own, the standard
library's, pyudev's) from three threads, and the writer helper loads its own beside it. The
disk does them far faster together: `start_preload` opens each file on a thread and hands it
to the kernel's readahead (posix_fadvise WILLNEED, which returns at once), so the imports that
follow find their files in the page cache. It reads nothing itself and changes nothing; a name
with no file is skipped.

What a command loads is listed in flasher/data/preload-<command>.txt, one module per line,
recorded by `scripts/preload_list.py` (tests/integration/test_preload_list.py fails when a
flasher module the flash loads is missing from it); the list is read as a plain file beside
this module, so an install whose modules are not files (a frozen app) preloads nothing. A file
is opened only without following a link (O_NOFOLLOW) and advised only if it is a regular file,
so a link or a device planted among the modules is never followed or read.

Imports only the standard library.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from importlib.machinery import EXTENSION_SUFFIXES

LISTS = os.path.join(os.path.dirname(__file__), "data")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def module_names(command: str) -> list[str]:
    """The modules `command` loads (empty when it has no list)."""
    try:
        with open(os.path.join(LISTS, f"preload-{command}.txt"), encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


class Roots:
    """Where modules are found: this package's parent folder, the standard library (its
    extension modules apart), and the site folders on sys.path for everything else."""

    def __init__(self) -> None:
        self.package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.stdlib = os.path.dirname(os.__file__)
        self.extensions = os.path.join(self.stdlib, "lib-dynload")
        self.site = [p for p in sys.path if os.path.isabs(p) and p.endswith("-packages")]
        self._found: dict[str, str | None] = {}

    def of(self, top: str) -> str | None:
        """The folder that holds the top-level package `top` (None: found nowhere)."""
        if top == "flasher":
            return self.package
        if top in sys.stdlib_module_names:
            return self.stdlib
        if top not in self._found:
            self._found[top] = next(
                (p for p in self.site if os.path.isdir(os.path.join(p, top))), None
            )
        return self._found[top]


def candidate_files(name: str, roots: Roots) -> list[str]:
    """The files module `name` could be loaded from: its compiled module, its package's
    `__init__`, or (standard library) an extension module."""
    parts = name.split(".")
    root = roots.of(parts[0])
    if root is None:
        return []
    folder = os.path.join(root, *parts[:-1])
    tag = sys.implementation.cache_tag
    found = [
        os.path.join(folder, "__pycache__", f"{parts[-1]}.{tag}.pyc"),
        os.path.join(folder, parts[-1], "__pycache__", f"__init__.{tag}.pyc"),
    ]
    if root == roots.stdlib and len(parts) == 1:
        found.append(os.path.join(roots.extensions, parts[0] + EXTENSION_SUFFIXES[0]))
    return found


def advise(path: str) -> bool:
    """Start reading `path` into the page cache, if it is a regular file reached without a
    link; whether it was."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def preload(names: list[str], roots: Roots) -> int:
    """Advise the first file found for each of `names` not loaded yet; how many were."""
    return sum(
        any(advise(path) for path in candidate_files(name, roots))
        for name in names
        if name not in sys.modules
    )


def start_preload(command: str) -> None:
    """Preload `command`'s modules on a thread of its own (see the module docstring)."""
    if not hasattr(os, "posix_fadvise"):
        return
    threading.Thread(
        target=lambda: preload(module_names(command), Roots()),
        name="flasher-preload",
        daemon=True,
    ).start()
