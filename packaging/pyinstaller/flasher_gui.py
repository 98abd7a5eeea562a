"""PyInstaller entry point of the desktop app (flasher-gui in the bundle).

A frozen app has no `python -m`: when the writer launcher starts "<this executable> -P -S -m
flasher.writer" (an app already running as root, e.g. a bench), run the helper instead.
"""

import sys

from flasher.writer.launchers import DIRECT_HELPER_ARGS

if tuple(sys.argv[1:5]) == DIRECT_HELPER_ARGS:
    from flasher.writer.helper import main as helper_main

    del sys.argv[1:5]
    sys.exit(helper_main())

from flasher.gui.app import main

sys.exit(main())
