"""The `flasher` command's entry point: starts reading its command's code from disk, then runs it.

Imports only the standard library, flasher.preload and flasher.dataclass_code, so the
command's modules are already on their way from a cold disk while the command line's own code
loads (see flasher.preload).

The code `dataclasses` generates for the command's classes comes from what earlier runs kept
(flasher.dataclass_code), and what this run compiled anew is kept when the command ends.

The cyclic garbage collector is paused while the command's code loads: loading makes tens of
thousands of objects (a flash ~250 modules and ~70 dataclasses) and no garbage cycles, and the
collector's passes over them delayed a flash's first write by 9–17 ms. `code_loaded`
resumes it, with what was loaded frozen out of every later pass: flasher.cli.main calls it
before a command's handler runs, or the handler does once its own code is in (`flash`, which
loads its machinery when it runs).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

from flasher import dataclass_code
from flasher.preload import start_preload

# The global options that take a value: the word after them is not the command.
VALUE_OPTIONS = ("--api-url", "--token")
# Words after which the command only prints and exits: nothing to preload for.
_PRINT_ONLY = ("-h", "--help", "--version")


def command_of(argv: Sequence[str]) -> str | None:
    """The top-level command word in `argv` (skipping the global options and their values)."""
    words = iter(argv)
    for word in words:
        if word in VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


_collector_paused = False


def _pause_collector() -> None:
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def code_loaded() -> None:
    """The command's code is in: the garbage collector runs again (if `main` paused it), and
    never scans what was loaded. Called more than once, or in a process whose collector `main`
    did not pause (the tests', calling flasher.cli.main directly), it does nothing."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        gc.enable()


def main() -> int:
    """The installed `flasher` command and `python -m flasher`: the command's modules preloaded,
    their dataclasses' code kept from earlier runs, `flasher.cli.main.main()` with the collector
    paused until its code is in, then no last garbage collection over what is still alive when
    the process exits (the operating system frees it; the interpreter's final passes over the
    ~250 loaded modules took about 10 ms)."""
    _pause_collector()
    try:
        argv = sys.argv[1:]
        command = command_of(argv)
        if command is not None and not any(word in _PRINT_ONLY for word in argv):
            start_preload(command)
        dataclass_code.start()
        from flasher.cli.main import main as run

        code = run()
    finally:
        code_loaded()  # when nothing said so earlier (help, a usage error)
        dataclass_code.save()
    gc.freeze()
    return code
