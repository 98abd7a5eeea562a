"""`python -m flasher.writer`: the privileged writer helper (see flasher.writer.helper).

How the app and the polkit wrapper start it. Its code loads with the cyclic garbage collector
paused (loading makes objects, not garbage cycles; the passes over them delayed the helper's
greeting by 4–10 ms), and what loaded is frozen out of every later pass. Once `main` has
returned, every job has ended (each target closed and reported, the socket shut), so the helper
leaves with `os._exit`: the interpreter's teardown would do nothing more, yet took about 10 ms
that the app waits out before the drives are free for the next command. An exception still ends
it the usual way.
"""

import gc
import os
import sys
from collections.abc import Callable


def _load() -> Callable[[], int]:
    gc.disable()
    try:
        from flasher.writer.helper import main
    finally:
        gc.freeze()
        gc.enable()
    return main


if __name__ == "__main__":
    code = _load()()
    sys.stderr.flush()
    os._exit(code)
