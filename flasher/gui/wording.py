"""Desktop wording for what the core reports: a drive problem in sizes a person reads (MB under
1 GB), and a next step a desktop user can take where the core's neutral hint still names a
command-line option or an environment variable.

Pure Python (no Qt). Imports flasher.errors, flasher.drives.constraints and flasher.models only.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

from flasher.drives.constraints import Problem, ProblemCode
from flasher.errors import FlasherError
from flasher.models import Drive

# A hint written for a terminal: an option, a command to run, an environment variable.
_CLI_HINT = re.compile(r"(?<![\w-])--[a-z]|'flasher |FLASHER_[A-Z_]+")

# What to do instead, by error code, where the core hint is worded for a terminal.
DESKTOP_HINTS: dict[str, str] = {
    "invalid_config": "Correct the setting on the Configure page.",
    "catalog": "Go back and choose another version from the list.",
    "api": "Check the internet connection, then try again.",
    "cache": "Free some disk space, then try again.",
    "download": "Free some disk space or check the connection, then try again.",
    "image": "Choose another image, or choose the device type that matches this one.",
    "drive_rejected": "Go back to the drive list and choose again.",
    "drive": "Insert the card again and choose it from the drive list.",
}

_URL_HINTS: dict[str, str] = {
    "image": "Check that the URL points at a balenaOS disk image (.img, .zip, .gz, .xz, .zst).",
    "download": "Check the URL and the connection, then try again.",
}


def desktop_hint(error: FlasherError, *, from_url: bool = False) -> str | None:
    """The error's hint, or the desktop's own words when it is worded for a terminal."""
    if from_url and error.code in _URL_HINTS:
        return _URL_HINTS[error.code]
    if error.hint is None or not _is_cli(error.hint):
        return error.hint
    return DESKTOP_HINTS.get(error.code)


def _is_cli(text: str) -> bool:
    return _CLI_HINT.search(text) is not None


def desktop_message(message: str, cache_dir: str | None) -> str:
    """The message without the cache's own file paths (the file's name says enough)."""
    if not cache_dir:
        return message
    root = os.path.join(os.path.abspath(cache_dir), "")

    def name_only(match: re.Match[str]) -> str:
        path = match.group(0)
        end = len(path.rstrip("."))
        return os.path.basename(path[:end]) + path[end:]

    return re.sub(re.escape(root) + r"[^\s,;:'\"()]*", name_only, message)


def size_words(size_bytes: int) -> str:
    """Decimal sizes as drive makers print them: 512 MB, 31.9 GB (MB under 1 GB)."""
    if size_bytes < 10**9:
        return f"{size_bytes / 10**6:.0f} MB"
    return f"{size_bytes / 10**9:.1f} GB"


def drive_name(drive: Drive) -> str:
    """ "The file card.img" or "/dev/sdb": a file is not called a drive."""
    return f"The file {os.path.basename(drive.path)}" if drive.is_file else drive.path


def word_problem(problem: Problem, drive: Drive, image_size_bytes: int) -> Problem:
    """The problem in desktop words where the core's are too coarse (a 0.0 GB drive)."""
    if problem.code is ProblemCode.TOO_SMALL:
        need = size_words(image_size_bytes)
        return replace(
            problem,
            message=(
                f"{drive_name(drive)} is too small: {size_words(drive.size_bytes)} for a "
                f"{need} image."
            ),
            hint=f"Use a card of at least {need}.",
        )
    return problem
