"""The station's image, prepared once: resolved, downloaded, unpacked and configured up front, so
every card starts at the write. With a hostname template each card gets its own configuration
(its own overlay, ~2 ms); the allocation map of the unconfigured image is computed once and each
card adds the ranges its overlay replaced.

Core: never prints, imports no Qt.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flasher.balena.registration import RegisteredDevice, device_config
from flasher.bench.policy import Slot
from flasher.cache import sha256_file
from flasher.errors import ConfigError
from flasher.events import CancelToken, EventCallback, Log, Phase, PhaseChanged, ignore_event
from flasher.image.byteio import FileReader
from flasher.image.configure import prepare_image
from flasher.image.inspection import ImageIdentity, read_image_identity
from flasher.image.partitions import read_partition_table
from flasher.image.sparse import AllocationMap, allocation_map
from flasher.models import DeviceConfig, Drive
from flasher.provider import ImageProvider, SourceSpec
from flasher.validation import validate_device_config, validate_hostname
from flasher.writer.job import ImageFeed

TEMPLATE_FIELDS = ("serial", "slot", "n")
_SAMPLE_SERIAL = "0123456789ab"
_NOT_HOSTNAME = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class CardFacts:
    """What a hostname template can use: the card's number, its slot and the drive."""

    n: int
    slot: Slot
    drive: Drive


def hostname_part(text: str) -> str:
    """`text` made fit for a hostname: lowercase letters, digits and single dashes."""
    return _NOT_HOSTNAME.sub("-", text.lower()).strip("-")


def _template_values(facts: CardFacts) -> dict[str, Any]:
    slot: int | str = (
        facts.slot.number
        if facts.slot.number is not None
        else hostname_part(Path(facts.slot.device).name)
    )
    return {"serial": hostname_part(facts.drive.serial), "slot": slot, "n": facts.n}


def render_hostname(template: str, facts: CardFacts) -> str:
    """The hostname for one card; ConfigError when the card lacks what the template needs."""
    values = _template_values(facts)
    if "{serial" in template and not values["serial"]:
        raise ConfigError(
            "hostname_template",
            f"needs a serial number, and the card in {facts.slot.label} reports none",
            hint="use {n} (the card's number) or {slot} instead",
        )
    try:
        name = template.format_map(values)
    except (ValueError, TypeError) as err:
        raise ConfigError("hostname_template", f"cannot be filled in: {err}") from None
    validate_hostname(name)
    return name


def check_hostname_template(template: str, *, numbered_slots: bool) -> None:
    """ConfigError unless `template` uses only {serial}, {slot} and {n} and gives a valid
    hostname (checked with sample values before anything is downloaded or written)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ConfigError("hostname_template", f"is not a valid template: {err}") from None
    fields = [f for _text, f, _spec, _conv in parsed if f is not None]
    unknown = sorted({f for f in fields if f not in TEMPLATE_FIELDS})
    if unknown:
        raise ConfigError(
            "hostname_template",
            f"uses {', '.join('{' + f + '}' for f in unknown)}; only {{serial}}, {{slot}} and "
            "{n} are filled in",
            hint="e.g. 'bench-{n:04d}' or 'kiosk-{serial}'",
        )
    if not fields:
        raise ConfigError(
            "hostname_template",
            "has no {serial}, {slot} or {n}: every card would get the same name",
            hint="use --hostname for one name on every card",
        )
    sample = Slot(name="/dev/sdb", device="/dev/sdb", number=1 if numbered_slots else None)
    drive = Drive(path="/dev/sdb", size_bytes=1, serial=_SAMPLE_SERIAL)
    render_hostname(template, CardFacts(n=1, slot=sample, drive=drive))


@dataclass(frozen=True)
class BenchJob:
    """What every card gets. `config` (or `config_from_image`, called once with the image's
    identity) configures the image; with neither, it is flashed as it is. A
    `hostname_template` gives each card its own hostname."""

    source: SourceSpec
    config: DeviceConfig | None = None
    config_from_image: Callable[[ImageIdentity], DeviceConfig] | None = None
    hostname_template: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        if self.config is not None:
            validate_device_config(self.config)
        if self.hostname_template is not None and (
            self.config is None and self.config_from_image is None
        ):
            raise ConfigError(
                "hostname_template",
                "needs a configured image",
                hint="add --device-type or configuration options",
            )


@dataclass(frozen=True)
class CardImage:
    """What one card is written with: the feed, the ranges to write, and its configuration."""

    feed: ImageFeed
    ranges: tuple[tuple[int, int], ...]
    config_sha256: str | None = None
    hostname: str | None = None


class BenchImage:
    """The prepared image shared by every card; `for_card` gives one card's image."""

    def __init__(
        self,
        raw_path: Path,
        base: FileReader,
        base_map: AllocationMap,
        *,
        image_sha256: str | None,
        identity: ImageIdentity,
        config: DeviceConfig | None,
        hostname_template: str | None,
    ) -> None:
        self.raw_path = raw_path
        self.size_bytes = base.size
        self.image_sha256 = image_sha256
        self.identity = identity
        self._base = base
        self._base_map = base_map
        self._config = config
        self._template = hostname_template
        # Configured once now, so a configuration the image cannot take fails before any card
        # (with a template, under a sample name; each card then gets its own).
        self._sample = self._configure("sample" if hostname_template is not None else None)

    @classmethod
    def prepare(
        cls,
        job: BenchJob,
        provider: ImageProvider,
        *,
        on_event: EventCallback = ignore_event,
        cancel: CancelToken | None = None,
    ) -> BenchImage:
        """Resolve, download, unpack and configure once; raises before any card is touched."""
        cancel = cancel or CancelToken()
        resolved = provider.obtain(job.source, on_event=on_event, cancel=cancel)
        cancel.check()
        identity = read_image_identity(resolved.raw_path)
        config = job.config
        if config is None and job.config_from_image is not None:
            config = job.config_from_image(identity)
        image_sha256 = resolved.sha256
        if image_sha256 is None:
            # A raw file used in place has no cache entry to carry its hash; the report needs it.
            on_event(PhaseChanged(Phase.CHECKING))
            on_event(Log("info", f"hashing {resolved.raw_path} for the report"))
            image_sha256 = sha256_file(resolved.raw_path, cancel)
        on_event(PhaseChanged(Phase.CONFIGURING))
        base = FileReader(resolved.raw_path)
        try:
            name = str(resolved.raw_path)
            base_map = allocation_map(base, read_partition_table(base, name=name), name=name)
            return cls(
                resolved.raw_path,
                base,
                base_map,
                image_sha256=image_sha256,
                identity=identity,
                config=config,
                hostname_template=job.hostname_template,
            )
        except BaseException:
            base.close()
            raise

    @property
    def config(self) -> DeviceConfig | None:
        """The configuration every card starts from (None: the image is written as it is)."""
        return self._config

    @property
    def mapped_bytes(self) -> int:
        return sum(length for _off, length in self._sample.ranges)

    def _configure(self, hostname: str | None, device: RegisteredDevice | None = None) -> CardImage:
        config = self._config
        if config is None:
            if device is not None:
                raise ConfigError("register", "needs a configured image with a fleet")
            return CardImage(ImageFeed.from_file(self.raw_path), self._base_map.ranges)
        if hostname is not None:
            config = replace(config, hostname=hostname)
        if device is not None:
            config = device_config(config, device)
        with prepare_image(self.raw_path, config, base=self._base) as prepared:
            # The unconfigured image's map plus every range the overlay replaced covers every
            # used block: configuring takes a block only by writing it.
            ranges = self._base_map.including(prepared.overlay.ranges()).ranges
            return CardImage(
                ImageFeed.from_file(self.raw_path, overlay=tuple(prepared.overlay.extents())),
                ranges,
                config_sha256=prepared.config_sha256,
                hostname=config.hostname,
            )

    def for_card(self, facts: CardFacts, device: RegisteredDevice | None = None) -> CardImage:
        """The image for one card: the shared one, or one with the card's own hostname and,
        for a registered `device`, that device's identity and key."""
        if self._template is None and device is None:
            return self._sample
        hostname = render_hostname(self._template, facts) if self._template is not None else None
        return self._configure(hostname, device)

    def summary(self) -> Mapping[str, Any]:
        """JSON-ready facts about the station's image (no secrets)."""
        return {
            "image": str(self.raw_path),
            "image_sha256": self.image_sha256,
            "size_bytes": self.size_bytes,
            "mapped_bytes": self.mapped_bytes,
            "device_type": self.identity.device_type,
            "os_version": self.identity.os_version,
            "configured": self._config is not None,
            "hostname_template": self._template,
        }

    def close(self) -> None:
        self._base.close()
