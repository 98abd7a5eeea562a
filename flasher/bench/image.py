"""What a bench station flashes: the job (prepared once through flasher.pipeline.prepare, which
refuses a source nothing proves) and the per-card hostname template, checked with sample values
before anything is downloaded and filled in for each card (`PreparedJob.card(hostname=…)` then
derives the card's image).

Core: never prints, imports no Qt.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flasher.bench.policy import Slot
from flasher.errors import ConfigError
from flasher.events import CancelToken, EventCallback, ignore_event
from flasher.image.inspection import ImageIdentity
from flasher.models import DeviceConfig, Drive
from flasher.pipeline.prepare import PreparedJob, prepare
from flasher.provider import ImageProvider, SourceSpec
from flasher.validation import validate_device_config, validate_hostname

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
    `hostname_template` gives each card its own hostname. `verify`, `write_all`, `bmap_path`
    and `expected_sha256` mean what they mean for flasher.pipeline.FlashJob; a bench takes no
    source that nothing proves (no check of its own, no expected SHA-256, no .bmap with
    checksums), since every card it writes would carry the same unnoticed corruption."""

    source: SourceSpec
    config: DeviceConfig | None = None
    config_from_image: Callable[[ImageIdentity], DeviceConfig] | None = None
    hostname_template: str | None = None
    verify: bool = True
    write_all: bool = False
    bmap_path: str | None = None
    expected_sha256: str | None = None  # required for a source without checksums of its own

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

    def prepare(
        self,
        provider: ImageProvider,
        *,
        on_event: EventCallback = ignore_event,
        cancel: CancelToken | None = None,
    ) -> PreparedJob:
        """The image every card gets, prepared once; ImageError (problem "no_integrity") for a
        source nothing proves, before it is configured."""
        return prepare(
            self.source,
            provider,
            config=self.config,
            config_from_image=self.config_from_image,
            bmap_path=self.bmap_path,
            write_all=self.write_all,
            expected_sha256=self.expected_sha256,
            require_integrity=True,
            on_event=on_event,
            cancel=cancel,
        )
