"""`python -m flasher` runs the command-line interface."""

from flasher.cli.main import entry

raise SystemExit(entry())
