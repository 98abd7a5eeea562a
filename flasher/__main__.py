"""`python -m flasher` runs the command-line interface."""

from flasher.cli.entry import main

raise SystemExit(main())
