"""PyInstaller entry point of the command line (flasher in the bundle)."""

import sys

from flasher.cli.main import entry

sys.exit(entry())
