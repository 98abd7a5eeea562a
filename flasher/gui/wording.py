"""Desktop wording for what the core reports: a drive problem in sizes a person reads (MB under
1 GB), a message without the cache's file paths, and each core Action as a control to use.

Pure Python (no Qt). Imports flasher.errors, flasher.error_codes, flasher.drives.constraints and
flasher.models only.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

from flasher.drives.constraints import Problem
from flasher.error_codes import Action, ProblemCode
from flasher.errors import FlasherError
from flasher.models import Drive

# What a desktop user does for each action the core names (the CLI's words: cli/hints.py).
DESKTOP_ACTIONS: dict[Action, str] = {
    Action.NAME_IMAGE: "Choose an image file, a URL or a device type on the OS page.",
    Action.NAME_TARGET: "Choose at least one drive on the Targets page.",
    Action.LIST_DRIVES: "Look for the card in the drive list on the Targets page.",
    Action.CONFIRM_DRIVE_WARNINGS: "Confirm the warnings to write anyway.",
    Action.ALLOW_INTERNAL_DISK: "Confirm the internal disk on its own to write it.",
    Action.USE_SANDBOX: "Or start Flasher in its offline sandbox mode.",
    Action.LOG_IN: "Log in to balenaCloud (balena login) or set an API key, then try again.",
    Action.CHECK_API_URL: "Check that the API address in the settings points at a balena API.",
    Action.LIST_DEVICE_TYPES: "Choose a device type from the list on the OS page.",
    Action.LIST_OS_VERSIONS: "Choose a version from the list on the OS page.",
    Action.LIST_UPDATE_TARGETS: "Choose one of the versions offered as an update.",
    Action.DOWNLOAD_OS: "Choose a device type and version on the OS page to get one.",
    Action.FORCE_LOCKED_DEVICE: "Or override the lock.",
    Action.NAME_SERVICE: "Choose one service of the app.",
    Action.CHOOSE_REPORT_FILE: "Choose another report file.",
    Action.GIVE_PROVISIONING_KEY: "Enter it in the provisioning key field on the Configure page.",
    Action.SHOW_DETAILS: "The details say what the writer helper reported.",
    Action.SET_CACHE_DIR: "Or start Flasher with its image cache on another disk.",
}

_URL_HINTS: dict[str, str] = {
    "image": "Check that the URL points at a balenaOS disk image (.img, .zip, .gz, .xz, .zst).",
    "download": "Check the URL and the connection, then try again.",
}


def desktop_hint(error: FlasherError, *, from_url: bool = False) -> str | None:
    """The hint as the desktop says it: the neutral hint, then the action in the app's words
    (for an image from a URL, what to check about the URL)."""
    if from_url and error.code in _URL_HINTS:
        return _URL_HINTS[error.code]
    action = DESKTOP_ACTIONS[error.action] if error.action is not None else None
    return " ".join(p for p in (error.hint, action) if p) or None


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
