"""Prepare: resolve → download → unpack → check → configure → map, once per job.

`prepare()` turns what the user named (a SourceSpec, a DeviceConfig) into a PreparedJob: the raw
image in the cache (or used in place), its SHA-256 (from the cache, or hashed once for a raw
file used in place), what proves its bytes (the source format's own check, an expected SHA-256,
a .bmap's checksums: flasher.image.integrity), its identity, the allocation map of the
unconfigured image and the configuration as given, applied in a copy-on-write overlay. A
PreparedJob derives per-card images cheaply (`card(hostname=…, device=…)`): only config.json and the
keyfiles are rendered again into a fresh overlay; the map is reused, plus the ranges that
overlay replaced (configuring takes a block only by writing it). Every face (CLI, desktop app,
bench) prepares through this one function and writes through flasher.pipeline.write.

Core: never prints, imports no Qt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flasher.cache import sha256_file
from flasher.errors import ConfigError, ImageError
from flasher.events import CancelToken, EventCallback, Log, Phase, PhaseChanged, ignore_event
from flasher.image.byteio import FileReader, ReadAt
from flasher.image.earlymap import EarlyMap
from flasher.image.inspection import ImageIdentity, read_identity_at, read_image_identity
from flasher.image.integrity import (
    IntegrityReport,
    bmap_checksummed,
    check_image,
    refuse_unproven,
    source_file,
)
from flasher.image.partitions import read_partition_table
from flasher.image.sparse import AllocationMap, allocation_map
from flasher.models import DeviceConfig
from flasher.provider import ImageProvider, ResolvedImage, SourceSpec
from flasher.unpacking import BackgroundUnpack, GrowingReader
from flasher.writer.job import ImageFeed

if TYPE_CHECKING:
    from flasher.balena.registration import RegisteredDevice

ConfigFromImage = Callable[[ImageIdentity], DeviceConfig]


@dataclass(frozen=True)
class CardImage:
    """What one card is written with: the feed (base file + overlay), the ranges to write
    (None: every byte), the clean journal bodies to scrub instead, and the configuration's facts
    for the report."""

    feed: ImageFeed
    ranges: tuple[tuple[int, int], ...] | None
    config_sha256: str | None = None
    hostname: str | None = None
    scrub: tuple[tuple[int, int], ...] = ()

    @property
    def mapped_bytes(self) -> int:
        if self.ranges is None:
            return self.feed.size_bytes
        return sum(length for _off, length in self.ranges)


@dataclass(frozen=True)
class PreparedJob:
    """An image ready to write: shared by every target and every card of a run.

    `image` is the configuration as given (or the plain image when there is none); `card()`
    derives another configuration of the same image. Holds the raw image open: `close()` it (or
    use it as a context manager) when the last card is written.
    """

    raw_path: Path
    size_bytes: int
    source_sha256: str | None
    identity: ImageIdentity
    config: DeviceConfig | None
    image: CardImage
    write_all: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    integrity: IntegrityReport = field(kw_only=True)
    _base: FileReader | GrowingReader = field(repr=False, compare=False, kw_only=True)
    _base_map: AllocationMap | None = field(repr=False, compare=False, kw_only=True)
    # A job written while its image is decoded: the decoding, and the map once it is complete.
    _unpacking: BackgroundUnpack | None = field(default=None, repr=False, kw_only=True)
    _late_map: list[AllocationMap] = field(default_factory=list, repr=False, kw_only=True)

    @property
    def configured(self) -> bool:
        return self.config is not None

    @property
    def mapped_bytes(self) -> int:
        if self._late_map:  # known once the image is decoded
            overlay = self.image.feed.overlay_ranges
            return sum(n for _off, n in self._late_map[0].including(overlay).ranges)
        return self.image.mapped_bytes

    @property
    def scrub_bytes(self) -> int:
        """The journal bytes scanned on each card instead of written (flasher.writer.scrub)."""
        if self._late_map:
            return self._late_map[0].including(self.image.feed.overlay_ranges).scrub_bytes
        return sum(n for _off, n in self.image.scrub)

    def card(
        self, *, hostname: str | None = None, device: RegisteredDevice | None = None
    ) -> CardImage:
        """This job's image for one card with its own hostname and, for a `device` registered
        in the fleet, that device's config.json (its uuid and own device API key instead of the
        provisioning key); with neither, the shared image.

        ConfigError for an invalid hostname, or for any hostname or device when the job is not
        configured, before anything is written. Costs a new overlay (a few milliseconds):
        config.json and the keyfiles are rendered again; the image is not read again.
        """
        if hostname is None and device is None:
            return self.image
        if self.config is None:
            field_name = "hostname" if device is None else "register"
            raise ConfigError(
                field_name,
                "needs a configured image",
                hint="Prepare the job with a configuration.",
            )
        config = self.config if hostname is None else replace(self.config, hostname=hostname)
        if device is not None:
            # Imported here: registration brings the network stack, which a plain flash of a
            # local file never loads.
            from flasher.balena.registration import device_config

            config = device_config(config, device)
        base_map = self._late_map[0] if self._late_map else self._base_map
        return _configure(self.raw_path, self._base, base_map, config)

    @property
    def image_file(self) -> str:
        """A path that opens the raw image now: `raw_path`, or while it is being decoded, the
        file it is decoded into (what target checks compare drives with)."""
        feed = self.image.feed
        if feed.growth is not None and feed.path is not None:
            return feed.path
        return str(self.raw_path)

    def sha256(self) -> str | None:
        """The image's SHA-256 for reports, or None for a local file prepared for `one_flash`
        (not hashed: reading all of the image for it would cost more than the flash itself)."""
        return self.source_sha256

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts about the prepared image (no secrets)."""
        return {
            "image": str(self.raw_path),
            "image_sha256": self.sha256(),
            "size_bytes": self.size_bytes,
            "mapped_bytes": self.mapped_bytes,
            "scrub_bytes": self.scrub_bytes,
            "device_type": self.identity.device_type,
            "os_version": self.identity.os_version,
            "configured": self.configured,
            **self.integrity.to_dict(),
        }

    def close(self, *, abandon: bool = False) -> None:
        """Release the image; an image still being decoded is waited for (cancelled first
        with `abandon`), so the cache ends with it complete or not at all."""
        self._base.close()
        if self._unpacking is not None:
            self._unpacking.close(abandon=abandon)

    def raise_source_error(self) -> None:
        """After `close`: raise the ImageError of an image found corrupt or truncated while it
        was decoded and written (its cards were failed and erased)."""
        if self._unpacking is not None:
            self._unpacking.raise_source_error()

    def __enter__(self) -> PreparedJob:
        return self

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        self.close(abandon=exc_type is not None)


def _configure(
    raw_path: Path, base: ReadAt, base_map: AllocationMap | None, config: DeviceConfig
) -> CardImage:
    from flasher.image.configure import prepare_image  # loaded only to configure

    with prepare_image(raw_path, config, base=base) as configured:
        card_map = None if base_map is None else base_map.including(configured.overlay.ranges())
        return CardImage(
            ImageFeed.from_file(raw_path, overlay=tuple(configured.overlay.extents())),
            None if card_map is None else card_map.ranges,
            config_sha256=configured.config_sha256,
            hostname=config.hostname,
            scrub=() if card_map is None else card_map.scrub,
        )


def _identity(
    raw_path: Path, resolved_type: str | None, resolved_version: str | None
) -> ImageIdentity:
    """What the image says it is; for an image that is not balenaOS, what the catalog said."""
    try:
        return read_image_identity(raw_path)
    except ImageError:
        return ImageIdentity(device_type=resolved_type, os_version=resolved_version)


def prepare(
    source: SourceSpec,
    provider: ImageProvider,
    *,
    config: DeviceConfig | None = None,
    config_from_image: ConfigFromImage | None = None,
    bmap_path: str | None = None,
    write_all: bool = False,
    expected_sha256: str | None = None,
    require_integrity: bool = False,
    one_flash: bool = False,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
    early_map: EarlyMap | None = None,
) -> PreparedJob:
    """Resolve, download, unpack, check, configure and map `source` once.

    `config` configures the image; `config_from_image` builds the configuration once the image
    is known (called with its identity); with neither the image is written as it is. `bmap_path`
    replaces the filesystem analysis with a .bmap (whose checksums are verified when the source
    has no check of its own); `write_all` skips the map (every byte is written).
    `expected_sha256` must be the SHA-256 of the decoded image or of the file as given;
    `require_integrity` refuses a source nothing proves. Raises (ConfigError, CatalogError,
    DownloadError, ImageError) before anything is written.

    `one_flash`: the job is written once, right away (not kept for more cards). Then, with no
    `bmap_path`, `write_all` or `expected_sha256`, a compressed image not unpacked yet is
    decoded into the cache on a thread and the job is ready as soon as its boot partition is:
    the writer follows the decoding (flasher.unpacking), and the allocation map comes when the
    stream has ended intact (close the job to wait for the decoding); and a local file is not
    hashed for the report (`sha256()` is None): reading all of it would cost more than the
    flash, and each target's own digest proves what was written. `early_map`: the map of a
    local raw image, started before (used only if it mapped this very file).
    """
    cancel = cancel or CancelToken()
    if config is not None:
        from flasher.validation import validate_device_config  # loaded only to configure

        validate_device_config(config)
    background = one_flash and bmap_path is None and not write_all and expected_sha256 is None
    resolved = provider.obtain(source, on_event=on_event, cancel=cancel, background=background)
    if resolved.unpacking is not None and resolved.unpacking.wait_size() is None:
        # The raw size cannot be told before the end: unpack first, as for a kept job.
        resolved.unpacking.close()
        resolved.unpacking.raise_error()
        resolved = replace(resolved, unpacking=None)
    if resolved.unpacking is not None:
        try:
            return _prepare_following(
                source,
                resolved,
                resolved.unpacking,
                config=config,
                config_from_image=config_from_image,
                require_integrity=require_integrity,
                on_event=on_event,
            )
        except BaseException:
            resolved.unpacking.close(abandon=True)
            raise
    cancel.check()
    sha256 = resolved.sha256
    source_path = source_file(source, resolved)
    if sha256 is None and one_flash and expected_sha256 is None:
        known: dict[Path, str] = {}  # a local file flashed once: not hashed (see above)
    elif sha256 is None:
        # A raw file used in place has no cache entry to carry its hash; reports need it.
        on_event(PhaseChanged(Phase.CHECKING))
        on_event(Log("info", f"hashing {resolved.raw_path} for the report"))
        sha256 = sha256_file(resolved.raw_path, cancel)
        known = {resolved.raw_path: sha256}
    else:
        known = {source_path: sha256}  # the cache's hash is the downloaded file's
    integrity = check_image(
        source_path,
        resolved.raw_path,
        expected_sha256,
        known_sha256=known,
        sniffed=resolved.source,
        on_event=on_event,
        cancel=cancel,
    )
    # A .bmap's checksums prove a source that cannot prove itself (verified while mapping).
    bmap_proves = (
        bmap_path is not None
        and not write_all
        and not integrity.checked
        and bmap_checksummed(bmap_path)
    )
    if require_integrity and not bmap_proves:
        refuse_unproven(integrity, source_path)
    if config is not None or config_from_image is not None:
        identity = read_image_identity(resolved.raw_path)  # ImageError: not balenaOS
    else:
        identity = _identity(resolved.raw_path, resolved.device_type, resolved.os_version)
    if config is None and config_from_image is not None:
        config = config_from_image(identity)
    on_event(PhaseChanged(Phase.CONFIGURING))
    base = FileReader(resolved.raw_path)
    try:
        name = str(resolved.raw_path)
        base_map = None
        if not write_all:
            if early_map is not None:
                base_map = early_map.take(
                    resolved.raw_path, base, bmap_path=bmap_path, verified=bmap_proves
                )
            if base_map is None:
                base_map = allocation_map(
                    base,
                    read_partition_table(base, name=name),
                    bmap_path=bmap_path,
                    verify_bmap_checksums=bmap_proves,
                    name=name,
                )
        if bmap_proves:
            integrity = replace(integrity, bmap_checked=True)
        if config is not None:
            image = _configure(resolved.raw_path, base, base_map, config)
        else:
            image = CardImage(
                ImageFeed.from_file(resolved.raw_path),
                None if base_map is None else base_map.ranges,
                scrub=() if base_map is None else base_map.scrub,
            )
        return PreparedJob(
            raw_path=resolved.raw_path,
            size_bytes=base.size,
            source_sha256=sha256,
            identity=identity,
            config=config,
            image=image,
            write_all=write_all,
            details=resolved.details,
            integrity=integrity,
            _base=base,
            _base_map=base_map,
        )
    except BaseException:
        base.close()
        raise


def _prepare_following(
    source: SourceSpec,
    resolved: ResolvedImage,
    unpack: BackgroundUnpack,
    *,
    config: DeviceConfig | None,
    config_from_image: ConfigFromImage | None,
    require_integrity: bool,
    on_event: EventCallback,
) -> PreparedJob:
    """`prepare` for an image being decoded: identity and configuration from its boot
    partition as soon as that is decoded; the map when the whole stream is."""
    source_path = source_file(source, resolved)
    integrity = check_image(source_path, resolved.raw_path, None, sniffed=resolved.source)
    if require_integrity:
        refuse_unproven(integrity, source_path)
    reader = unpack.reader()
    name = str(resolved.raw_path)
    # The start of the disk, where the boot partition is: logical partitions and a GPT backup
    # lie further in the stream (the map reads the whole table, and the gaps between the
    # partitions for data, once the image is complete).
    table = read_partition_table(reader, name=name, early=True)
    if config is not None or config_from_image is not None:
        identity = read_identity_at(reader, name=name, table=table)  # ImageError: not balenaOS
    else:
        try:
            identity = read_identity_at(reader, name=name, table=table)
        except ImageError:
            identity = ImageIdentity(
                device_type=resolved.device_type, os_version=resolved.os_version
            )
    if config is None and config_from_image is not None:
        config = config_from_image(identity)
    on_event(PhaseChanged(Phase.CONFIGURING))
    overlay: tuple[tuple[int, bytes], ...] = ()
    config_sha256 = None
    if config is not None:
        from flasher.image.configure import prepare_image  # loaded only to configure

        with prepare_image(resolved.raw_path, config, base=reader, table=table) as configured:
            overlay = tuple(configured.overlay.extents())
            config_sha256 = configured.config_sha256
    late_map: list[AllocationMap] = []
    overlay_ranges = tuple((off, len(data)) for off, data in overlay if data)

    def complete(io: ReadAt) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
        base_map = allocation_map(io, read_partition_table(io, name=name), name=name)
        late_map.append(base_map)
        card_map = base_map.including(overlay_ranges)
        return card_map.ranges, card_map.scrub

    unpack.when_complete(complete)
    feed = ImageFeed(
        unpack.size_bytes, path=unpack.read_path, overlay=overlay, growth=unpack.growth
    )
    return PreparedJob(
        raw_path=resolved.raw_path,
        size_bytes=unpack.size_bytes,
        source_sha256=resolved.sha256,
        identity=identity,
        config=config,
        image=CardImage(
            feed,
            None,
            config_sha256=config_sha256,
            hostname=None if config is None else config.hostname,
        ),
        details=resolved.details,
        integrity=integrity,
        _base=reader,
        _base_map=None,
        _unpacking=unpack,
        _late_map=late_map,
    )
