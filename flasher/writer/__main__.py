"""`python -m flasher.writer`: the privileged writer helper (see flasher.writer.helper).

How the app and the polkit wrapper start it. Once `main` has returned, every job has ended
(each target closed and reported, the socket shut), so the helper leaves with `os._exit`: the
interpreter's teardown would do nothing more, yet took about 10 ms that the app waits out
before the drives are free for the next command. An exception still ends it the usual way.
"""

import os
import sys

from flasher.writer.helper import main

if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)
