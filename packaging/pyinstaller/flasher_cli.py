"""PyInstaller entry point of the command line (flasher in the bundle)."""

import sys

from flasher.cli.entry import main

sys.exit(main())
