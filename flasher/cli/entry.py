"""The `flasher` command's entry point: starts reading its command's code from disk, then runs it.

Imports only the standard library and flasher.preload, so the command's modules are already
on their way from a cold disk while the command line's own code loads (see flasher.preload).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

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


def main() -> int:
    """The installed `flasher` command and `python -m flasher`: the command's modules preloaded,
    `flasher.cli.main.main()`, then no last garbage collection over what is still alive when
    the process exits (the operating system frees it; the interpreter's final passes over the
    ~250 loaded modules took about 10 ms)."""
    argv = sys.argv[1:]
    command = command_of(argv)
    if command is not None and not any(word in _PRINT_ONLY for word in argv):
        start_preload(command)
    from flasher.cli.main import main as run

    code = run()
    gc.freeze()
    return code
