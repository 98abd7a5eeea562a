"""The command line's words for an error's next step: each core Action as an option or a command.

`cli_hint(err)` is the error's neutral hint followed by the CLI's wording of its action; every
place the CLI shows an error (text or --json) uses it. Imports flasher.errors and
flasher.error_codes only.
"""

from __future__ import annotations

from typing import Any

from flasher.error_codes import Action
from flasher.errors import FlasherError

CLI_ACTIONS: dict[Action, str] = {
    Action.NAME_IMAGE: (
        "Name an image file or URL, or a device type: e.g. 'flasher flash balena.img --target …' "
        "or 'flasher flash --device-type raspberrypi4-64 --target …'."
    ),
    Action.NAME_TARGET: "Add '--target /dev/sdX' or '--target card.img'.",
    Action.LIST_DRIVES: "Run 'flasher drives --all' to list the drives.",
    Action.CONFIRM_DRIVE_WARNINGS: "Re-run with --yes to accept these warnings.",
    Action.ALLOW_INTERNAL_DISK: "Add --allow-internal-disk (and --yes) to write an internal disk.",
    Action.USE_SANDBOX: "Or add --sandbox to work offline.",
    Action.LOG_IN: (
        "Log in with 'balena login', or set BALENA_API_KEY to an API key, or pass --token."
    ),
    Action.CHECK_API_URL: "Check that --api-url points at a balena API.",
    Action.LIST_DEVICE_TYPES: "Run 'flasher device-types' to list the valid slugs.",
    Action.LIST_OS_VERSIONS: "List them with 'flasher os versions <device type>'.",
    Action.LIST_UPDATE_TARGETS: "List them with 'flasher os update-targets'.",
    Action.DOWNLOAD_OS: "Get one with 'flasher os download'.",
    Action.FORCE_LOCKED_DEVICE: "Or add --force to override the lock.",
    Action.NAME_SERVICE: "Name one service with --service.",
    Action.CHOOSE_REPORT_FILE: "Choose another file with --report.",
    Action.GIVE_PROVISIONING_KEY: "Pass it in the FLASHER_PROVISIONING_KEY environment variable.",
    Action.SHOW_DETAILS: "Run with -v for details.",
    Action.SET_CACHE_DIR: "Or set FLASHER_CACHE_DIR to a folder on another disk.",
}


def cli_hint(err: FlasherError) -> str | None:
    """The hint as the command line says it: the neutral hint, then the action's wording."""
    parts = [p for p in (err.hint, CLI_ACTIONS.get(err.action) if err.action else None) if p]
    return " ".join(parts) or None


def cli_error_dict(err: FlasherError) -> dict[str, Any]:
    """err.to_dict() with the hint in the command line's words (the --json error object)."""
    out = err.to_dict()
    hint = cli_hint(err)
    if hint:
        out["hint"] = hint
    return out
