"""`python -m flasher.writer`: the privileged writer helper (see flasher.writer.helper).

How the app and the polkit wrapper start it. Its dataclasses take the code earlier runs kept
(flasher.dataclass_code; what it compiled anew is kept once its jobs are done), and its code
loads with the cyclic garbage collector paused (loading makes objects, not garbage cycles; the
passes over them delayed the helper's greeting by 4–10 ms); what loaded is frozen out of every
later pass. Once `main` has returned, every job has ended (each target closed and reported, the
socket shut), so the helper leaves with `os._exit`: the interpreter's teardown would do nothing
more, yet took about 10 ms that the app waits out before the drives are free for the next
command. An exception still ends it the usual way.
"""

import gc
import os
import sys
from collections.abc import Callable

from flasher import dataclass_code


def _load() -> Callable[[], int]:
    gc.disable()
    try:
        dataclass_code.start()
        from flasher.writer.helper import main
    finally:
        gc.freeze()
        gc.enable()
    return main


if __name__ == "__main__":
    code = _load()()
    dataclass_code.save()
    sys.stderr.flush()
    os._exit(code)
