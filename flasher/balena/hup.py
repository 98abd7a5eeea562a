"""Host OS update (HUP) rules: which update action takes a device from one balenaOS to another.

The rules of balena-hup-action-utils as they stand now: every device type updates with
`balenahup` from 2.14.0+rev1 or later to 2.16.0+rev1 or later, never between development and
production variants, never downwards; a few Jetson boards need a `takeover` to cross a layout
change. The legacy resinhup11/resinhup12 paths for balenaOS 1.x are gone upstream and here.

Imports only the standard library and flasher.balena.versions; no I/O.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from flasher.balena import versions
from flasher.error_codes import Action, ErrorCode
from flasher.errors import CatalogError

UpdateType = Literal["balenahup", "takeover"]

MIN_SOURCE_VERSION = "2.14.0+rev1"
MIN_TARGET_VERSION = "2.16.0+rev1"

# Boards whose partition layout changed: crossing these versions rewrites the disk (takeover).
MIN_TAKEOVER_VERSION: dict[str, str] = {
    "jetson-xavier": "6.0.50",
    "jetson-xavier-nx-devkit": "6.0.50+rev1",
    "jetson-xavier-nx-devkit-emmc": "6.0.39",
}


class OsUpdateError(CatalogError):
    """An OS update between two versions is not possible; `rule` says which rule forbids it."""

    code = ErrorCode.OS_UPDATE
    detail_names: ClassVar[tuple[str, ...]] = ("rule", "current", "target", "device_type")

    def __init__(self, rule: str, *, current: str, target: str, device_type: str) -> None:
        super().__init__(
            f"Cannot update {device_type} from {current} to {target}: {rule}",
            device_type=device_type,
            hint="Pick one of the update targets listed for this version.",
            action=Action.LIST_UPDATE_TARGETS,
        )
        self.rule = rule
        self.current = current
        self.target = target


def get_hup_action_type(device_type: str, current: str, target: str) -> UpdateType:
    """The update action from `current` to `target` on `device_type` (a canonical slug).

    Raises OsUpdateError naming the broken rule, with the upstream wording.
    """

    def refuse(rule: str) -> OsUpdateError:
        return OsUpdateError(rule, current=current, target=target, device_type=device_type)

    current_parsed = versions.parse(current)
    if current_parsed is None:
        raise refuse("Invalid current balenaOS version")
    target_parsed = versions.parse(target)
    if target_parsed is None:
        raise refuse("Invalid target balenaOS version")
    # Unified images (2.85+) carry no variant and may follow either kind of image.
    target_variant = target_parsed.variant
    current_is_dev = current_parsed.variant == "dev"
    if target_variant is not None and current_is_dev != (target_variant == "dev"):
        raise refuse(
            "Updates cannot be performed between development and production balenaOS variants"
        )
    if versions.lt(target, current):
        raise refuse("OS downgrades are not allowed")
    if versions.compare(current, target) == 0:
        raise refuse("Current OS version matches Target OS version")
    if versions.lt(current, MIN_SOURCE_VERSION):
        raise refuse(f"Current OS version must be >= {MIN_SOURCE_VERSION}")
    if versions.lt(target, MIN_TARGET_VERSION):
        raise refuse(f"Target OS version must be >= {MIN_TARGET_VERSION}")
    takeover_from = MIN_TAKEOVER_VERSION.get(device_type)
    if takeover_from is not None:
        # A trailing .dev/.prod sorts below the bare version and would trigger takeover twice.
        bare_current = next(
            (current[: -len(s)] for s in (".dev", ".prod") if current.endswith(s)), current
        )
        if versions.lt(bare_current, takeover_from) and versions.gte(target, takeover_from):
            return "takeover"
    return "balenahup"


def is_supported_os_update(device_type: str, current: str, target: str) -> bool:
    """Whether any update action goes from `current` to `target` on `device_type`."""
    try:
        get_hup_action_type(device_type, current, target)
    except OsUpdateError:
        return False
    return True
