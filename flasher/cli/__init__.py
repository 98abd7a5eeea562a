"""Command-line faces of Flasher: argparse commands, progress output and exit codes."""
