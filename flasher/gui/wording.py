"""The desktop app's words for an error's next step: each core Action as a control to use.

Pure Python (no Qt). Imports flasher.errors and flasher.error_codes only.
"""

from __future__ import annotations

from flasher.error_codes import Action
from flasher.errors import FlasherError

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
    Action.SET_CACHE_DIR: "Or start Flasher with its image cache on another disk.",
}


def action_hint(err: FlasherError) -> str | None:
    """The hint as the desktop says it: the neutral hint, then the action's wording."""
    parts = [p for p in (err.hint, DESKTOP_ACTIONS.get(err.action) if err.action else None) if p]
    return " ".join(parts) or None
