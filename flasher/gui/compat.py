"""Keep the interpreter alive under PySide6 builds that treat None, True and False as immortal.

PySide6 6.12 returns None from void methods (`setText`, `setValue`, `click`, …) and True from
`Signal.emit` without taking a reference. On Python 3.12+ these singletons are immortal and
nothing happens; on Python 3.11 every such call lowers a reference count that was never raised,
and a GUI that updates a progress bar many times a second ends, sooner or later, in "Fatal Python
error: none_dealloc". `pin_singletons()` probes for the behaviour and, when found, gives the
three singletons a reference count too large to run out in any session — what Python 3.12 does
for them by design. flasher.gui runs it once, before any widget exists.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject

# 2**48 references: at a million stolen references a second, nine years.
PIN_REFERENCES = 1 << 48
_PROBE_CALLS = 64


def void_calls_steal_none() -> bool:
    """Whether this PySide6 loses a reference to None on every void call."""
    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(_PROBE_CALLS):
        probe.setObjectName("probe")
    return sys.getrefcount(None) <= before - _PROBE_CALLS // 2


def pin_singletons() -> bool:
    """Make None, True and False unreachable by reference leaks; True if it had to."""
    if sys.version_info >= (3, 12) or not void_calls_steal_none():
        return False
    for singleton in (None, True, False):
        # CPython keeps the reference count in the object's first word; the GIL is held.
        ctypes.c_ssize_t.from_address(id(singleton)).value += PIN_REFERENCES
    return True
