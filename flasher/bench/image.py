"""What a bench station flashes: the job (prepared once through flasher.pipeline.prepare, which
refuses a source nothing proves) and the per-card hostname template, checked with sample values
before anything is downloaded and filled in for each card (`PreparedJob.card(hostname=…)` then
derives the card's image). Template fields: {n} (the card's number), {slot} (the slot's name,
else its number, else the device name), {serial} (the drive's serial) and {date} (the UTC day
the card was taken, YYYYMMDD: a hostname holds no ':' and reads better without '-').

Core: never prints, imports no Qt.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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

TEMPLATE_FIELDS = ("n", "slot", "serial", "date")
_SAMPLE_SERIAL = "0123456789ab"
_SAMPLE_DATE = dt.date(2026, 12, 31)
_NOT_HOSTNAME = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class CardFacts:
    """What a hostname template can use: the card's number, its slot, the drive and the UTC
    day it was taken."""

    n: int
    slot: Slot
    drive: Drive
    date: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())


def hostname_part(text: str) -> str:
    """`text` made fit for a hostname: lowercase letters, digits and single dashes."""
    return _NOT_HOSTNAME.sub("-", text.lower()).strip("-")


def _template_values(facts: CardFacts) -> dict[str, Any]:
    slot: int | str
    if facts.slot.title is not None:
        slot = hostname_part(facts.slot.title)
    elif facts.slot.number is not None:
        slot = facts.slot.number
    else:
        slot = hostname_part(Path(facts.slot.device).name)
    return {
        "serial": hostname_part(facts.drive.serial),
        "slot": slot,
        "n": facts.n,
        "date": facts.date.strftime("%Y%m%d"),
    }


def render_hostname(template: str, facts: CardFacts) -> str:
    """The hostname for one card; ConfigError when the card lacks what the template needs."""
    values = _template_values(facts)
    if "{serial" in template and not values["serial"]:
        raise ConfigError(
            "hostname_template",
            f"needs a serial number, and the card in {facts.slot.label} reports none",
            hint="Use {n} (the card's number) or {slot} instead.",
        )
    try:
        name = template.format_map(values)
    except (ValueError, TypeError) as err:
        raise ConfigError("hostname_template", f"cannot be filled in: {err}") from None
    validate_hostname(name)
    return name


def check_hostname_template(
    template: str, *, numbered_slots: bool, slot_titles: Sequence[str | None] = ()
) -> None:
    """ConfigError unless `template` uses only {n}, {slot}, {serial} and {date} and gives a
    valid hostname (checked with sample values, and each of `slot_titles`, before anything is
    downloaded or written)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ConfigError("hostname_template", f"is not a valid template: {err}") from None
    fields = [f for _text, f, _spec, _conv in parsed if f is not None]
    unknown = sorted({f for f in fields if f not in TEMPLATE_FIELDS})
    if unknown:
        raise ConfigError(
            "hostname_template",
            f"uses {', '.join('{' + f + '}' for f in unknown)}; only {{n}}, {{slot}}, "
            "{serial} and {date} are filled in",
            hint="For example 'bench-{n:04d}', 'kiosk-{date}-{n}' or 'kiosk-{serial}'.",
        )
    if not fields or set(fields) == {"date"}:
        raise ConfigError(
            "hostname_template",
            "has no {n}, {slot} or {serial}: cards would share one name",
            hint="Give one hostname for every card instead, or add {n}.",
        )
    drive = Drive(path="/dev/sdb", size_bytes=1, serial=_SAMPLE_SERIAL)
    for title in slot_titles or (None,):
        sample = Slot(
            name="/dev/sdb", device="/dev/sdb", number=1 if numbered_slots else None, title=title
        )
        render_hostname(template, CardFacts(n=1, slot=sample, drive=drive, date=_SAMPLE_DATE))


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
                hint="Name a device type or give configuration settings.",
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
