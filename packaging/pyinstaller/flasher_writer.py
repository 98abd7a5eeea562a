"""PyInstaller entry point of the privileged writer helper (flasher-writer in the bundle): the
standard library and flasher.writer only, started by pkexec through the polkit action."""

import sys

from flasher.writer.helper import main

sys.exit(main())
