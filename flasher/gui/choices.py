"""What the OS page chose, as values: an opened image file or URL (its raw image in the cache
and what it says it is), and the selection handed to the rest of the window; and the words that
describe an opened image. Pure Python (no Qt); imports the core's image inspection and provider
values only.
"""

from __future__ import annotations

from dataclasses import dataclass

from flasher.gui.progress import human_bytes
from flasher.image.inspection import ImageInfo
from flasher.provider import SourceSpec


@dataclass(frozen=True)
class ImageChoice:
    """A local file or URL, opened: its raw image in the cache and what it says it is."""

    spec: SourceSpec
    raw_path: str
    size_bytes: int
    info: ImageInfo

    @property
    def device_type(self) -> str | None:
        return self.info.identity.device_type

    @property
    def os_version(self) -> str | None:
        return self.info.identity.os_version


@dataclass(frozen=True)
class Selection:
    """What the OS page picked: a catalog device type + version, or an opened image."""

    spec: SourceSpec
    device_type: str | None
    os_version: str | None
    title: str
    image_size_bytes: int | None = None
    source_path: str | None = None


def image_words(choice: ImageChoice) -> str:
    """ "Device type: Raspberry Pi 4 (raspberrypi4-64) · balenaOS 6.5.50 · 1.2 GB unpacked"."""
    identity = choice.info.identity
    what = identity.device_type_name or identity.device_type
    parts = [
        f"Device type: {what} ({identity.device_type})"
        if identity.device_type
        else "Device type: not recorded in the image",
        f"balenaOS {identity.os_version}" if identity.os_version else "balenaOS version: unknown",
        f"{human_bytes(choice.size_bytes)} unpacked",
    ]
    return " · ".join(parts)
