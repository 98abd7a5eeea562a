"""Which drives a bench station may take, and which physical slot each one sits in.

A `DrivePolicy` is the station's filter: never a system drive (in use by the running system), an
internal disk or a file; only the transports it names (USB and SD/MMC by default) or drives the
kernel calls removable; only the bench's slots
when slot patterns are given (globs over /dev/disk/by-path links or device paths); only sizes
within its limits. Pure functions over Drive values; imports only the standard library and
flasher's value and constraint modules. Never prints.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from flasher.drives.constraints import LARGE_DRIVE_BYTES
from flasher.errors import ConfigError
from flasher.models import Drive

DEFAULT_BUSES = frozenset({"usb", "mmc"})
# Transports that are never removable media: a drive on them is refused even when allowed
# by name, since discovery flags it as a system drive anyway and a typo must not unlock it.
INTERNAL_BUSES = frozenset({"nvme", "virtio"})
# An operator's name for a slot: short, and usable as part of a hostname once lowercased.
SLOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")


@dataclass(frozen=True)
class SlotPattern:
    """One bench slot: a glob over by-path names or device paths, and the operator's name for
    it ("left", "A1"), if any."""

    pattern: str
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> SlotPattern:
        """ "NAME=PATTERN" (a named slot) or a bare PATTERN."""
        name, sep, pattern = text.partition("=")
        if sep and SLOT_NAME.fullmatch(name):
            return cls(pattern, name)
        return cls(text)

    def __str__(self) -> str:
        """As `parse` reads it."""
        return f"{self.name}={self.pattern}" if self.name else self.pattern


@dataclass(frozen=True)
class Slot:
    """Where a card sits: `name` is its /dev/disk/by-path link (the physical port) or, without
    one, its device path; `number` is the 1-based position of the slot pattern it matched, and
    `title` that slot's name given by the operator."""

    name: str
    device: str
    number: int | None = None
    title: str | None = None

    @property
    def label(self) -> str:
        """Short text for a person: the slot's name, its number, else the by-path link or
        device name."""
        if self.title is not None:
            return f"slot {self.title}"
        if self.number is not None:
            return f"slot {self.number}"
        return os.path.basename(self.name)


def card_identity(drive: Drive) -> tuple[str, str, str, int]:
    """What tells one inserted card from another in the same slot."""
    return (drive.path, drive.dev, drive.serial, drive.size_bytes)


def _gb(size_bytes: int) -> str:
    return f"{size_bytes / 10**9:.1f} GB"


@dataclass(frozen=True)
class DrivePolicy:
    """The station's filter. `refusal(drive)` is None for a drive it may flash, else why not.

    `slots` are glob patterns (strings, or SlotPatterns giving the slot a name): one starting
    with "/" is matched against the device path and its full /dev/disk/by-path links; otherwise
    against the link names and the device name (so
    "pci-0000:00:14.0-usb-0:1.2:1.0-scsi-0:0:0:0" and "sd[b-e]" both work). `buses` are the
    transports taken besides drives flagged removable (`removable=True`); tests add "loop".
    """

    slots: tuple[str | SlotPattern, ...] = ()
    buses: frozenset[str] = DEFAULT_BUSES
    removable: bool = True
    min_size_bytes: int = 0
    max_size_bytes: int | None = LARGE_DRIVE_BYTES

    def __post_init__(self) -> None:
        patterns = tuple(s if isinstance(s, SlotPattern) else SlotPattern(s) for s in self.slots)
        object.__setattr__(self, "slots", patterns)
        names: set[str] = set()
        for slot in patterns:
            if not slot.pattern.strip():
                raise ConfigError("slot", "is empty", hint="Give a by-path glob or /dev/sdX.")
            if slot.name is None:
                continue
            if not SLOT_NAME.fullmatch(slot.name):
                raise ConfigError(
                    "slot",
                    f"name '{slot.name}' is not 1 to 32 letters, digits, '.', '_' or '-'",
                    hint="Name slots with short words such as left, right or A1.",
                )
            if slot.name.lower() in names:
                raise ConfigError("slot", f"name '{slot.name}' is given to two slots")
            names.add(slot.name.lower())
        internal = sorted(self.buses & INTERNAL_BUSES)
        if internal:
            raise ConfigError(
                "bus",
                f"{', '.join(internal)} drives are internal disks, never bench cards",
                hint="Allow usb, mmc (the default) or the transport of your card readers.",
            )
        if self.min_size_bytes < 0:
            raise ConfigError("min_size", "must not be negative")
        if self.max_size_bytes is not None and self.max_size_bytes < self.min_size_bytes:
            raise ConfigError("max_size", "is smaller than the minimum size")

    def slot_of(self, drive: Drive) -> Slot | None:
        """The slot `drive` sits in; None when slot patterns are set and none matches."""
        links = drive.by_path
        name = links[0] if links else drive.path
        if not self.slots:
            return Slot(name=name, device=drive.path)
        for number, slot in enumerate(self.patterns, start=1):
            if _matches(slot.pattern, drive.path, links):
                return Slot(name=name, device=drive.path, number=number, title=slot.name)
        return None

    @property
    def patterns(self) -> tuple[SlotPattern, ...]:
        """The slots, each as a SlotPattern (strings are made into them on construction)."""
        return tuple(s for s in self.slots if isinstance(s, SlotPattern))

    def refusal(self, drive: Drive) -> str | None:
        """Why the station must not take `drive` (None: it may)."""
        reason = self._placement_refusal(drive)
        if reason is not None:
            return reason
        if drive.size_bytes < self.min_size_bytes:
            return (
                f"{_gb(drive.size_bytes)} is below the bench's minimum of "
                f"{_gb(self.min_size_bytes)}"
            )
        if self.max_size_bytes is not None and drive.size_bytes > self.max_size_bytes:
            return (
                f"{_gb(drive.size_bytes)} is above the bench's limit of {_gb(self.max_size_bytes)}"
            )
        return None

    def in_bench(self, drive: Drive) -> bool:
        """Whether `drive` sits where the bench takes cards (whatever its size), so that a
        refusal concerns the operator rather than some other drive of the machine."""
        return self._placement_refusal(drive) is None

    def _placement_refusal(self, drive: Drive) -> str | None:
        if drive.system:
            return "system drive"
        if drive.internal:
            return "internal disk"
        if drive.is_file:
            return "not a drive"
        if drive.bus in INTERNAL_BUSES:
            return f"internal {drive.bus} disk"
        if drive.bus not in self.buses and not (self.removable and drive.removable):
            return f"not a removable card ({drive.bus or 'unknown'} bus)"
        if self.slot_of(drive) is None:
            return "not in one of the bench's slots"
        return None

    def offered(self, drives: Sequence[Drive]) -> list[Drive]:
        """The drives of `drives` the station may flash, in their order."""
        return [d for d in drives if self.refusal(d) is None]


def _matches(pattern: str, path: str, links: Sequence[str]) -> bool:
    if pattern.startswith("/"):
        return any(fnmatch.fnmatchcase(p, pattern) for p in (path, *links))
    names = [os.path.basename(path), *(os.path.basename(link) for link in links)]
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)
