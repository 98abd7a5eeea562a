"""PyInstaller entry point of the desktop app (flasher-gui in the bundle).

A frozen app has no `python -m`: when the writer launcher starts "<this executable> -m
flasher.writer" (an app already running as root, e.g. a bench), run the helper instead.
"""

import sys

if sys.argv[1:3] == ["-m", "flasher.writer"]:
    from flasher.writer.helper import main as helper_main

    del sys.argv[1:3]
    sys.exit(helper_main())

from flasher.gui.app import main

sys.exit(main())
