"""Configure a balenaOS image without copying or changing it: config.json and NetworkManager
keyfiles are written into the boot partition through a copy-on-write overlay, so the prepared
image is the (read-only, possibly cached) base file plus a few replaced sectors.

Deterministic: files are written in a fixed order with a fixed timestamp (`FIXED_EPOCH`), so the
same image and the same settings give the same bytes and the same SHA-256.

Which config.json is written:
* `DeviceConfig.base_config` set (`--config FILE`, or the API's config): it REPLACES the image's
  config.json, as `balena os configure --config` does, with the explicit settings on top.
* Otherwise the image's own config.json is the starting point, so keys the image ships (e.g.
  `persistentLogging`, `os.*`, `country`) survive and a configured image can be configured
  again; the settings are layered on top as flasher.balena.config describes. Keys that
  identify one registered device (`uuid`, `deviceApiKey`, `deviceApiKeys`, `deviceId`,
  `registered_at`) are dropped, so an image taken from a provisioned card never clones that
  device onto others.
Keyfiles from `render_keyfiles` go to /system-connections/ (created if missing); existing files
there are replaced only when a keyfile has the same name, and nothing is removed.

Core: no printing. Imports only the standard library and flasher (errors, models, validation,
balena.config, image.*).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flasher.balena.config import config_json_bytes
from flasher.error_codes import Action, ProblemCode
from flasher.errors import ConfigError, ImageError
from flasher.image.byteio import FileReader, ReadAt
from flasher.image.inspection import (
    CONFIG_PATH,
    CONNECTIONS_DIR,
    ImageIdentity,
    boot_filesystem,
    open_boot_partition,
    read_config_json,
    read_identity,
)
from flasher.image.network import render_keyfiles
from flasher.image.overlay import Overlay, OverlayReader
from flasher.image.partitions import Partition, PartitionTable, read_partition_table
from flasher.image.sparse import AllocationMap, allocation_map
from flasher.models import DeviceConfig
from flasher.validation import validate_device_config

FIXED_EPOCH = 1_704_067_200  # 2024-01-01 00:00:00 UTC: the mtime of every file we write
DEVICE_IDENTITY_KEYS = frozenset(
    {"uuid", "deviceApiKey", "deviceApiKeys", "deviceId", "registered_at"}
)


@dataclass
class PreparedImage:
    """A configured image: `base_path` (never modified) plus `overlay`.

    Holds the base open; `close()` it (or use it as a context manager) when done.
    """

    base_path: Path
    size_bytes: int
    overlay: Overlay
    table: PartitionTable
    boot_partition: Partition
    boot_label: str
    identity: ImageIdentity
    files_written: tuple[str, ...]
    config_sha256: str
    _owned: FileReader | None = field(default=None, repr=False)
    _sha256: str | None = field(default=None, init=False, repr=False)
    _map: AllocationMap | None = field(default=None, init=False, repr=False)

    @property
    def device_type(self) -> str | None:
        return self.identity.device_type

    @property
    def os_version(self) -> str | None:
        return self.identity.os_version

    @property
    def variant(self) -> str | None:
        return self.identity.variant

    def sha256(self) -> str:
        """Hex SHA-256 of the whole configured image (reads it all once, then cached)."""
        if self._sha256 is None:
            self._sha256 = self.overlay.sha256()
        return self._sha256

    def allocation_map(self) -> AllocationMap:
        """What a flash must write: the filesystems' used blocks as configured (read through
        the overlay, so newly taken clusters count), plus every replaced range."""
        if self._map is None:
            amap = allocation_map(self.overlay, self.table, name=str(self.base_path))
            self._map = amap.including(self.overlay.ranges())
        return self._map

    def reader(self) -> OverlayReader:
        """The configured image as a sequential stream."""
        return self.overlay.reader()

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts about the configuration (no secrets, no image hash)."""
        return {
            "image": str(self.base_path),
            "size_bytes": self.size_bytes,
            "boot_partition": self.boot_partition.number,
            "boot_label": self.boot_label,
            **self.identity.to_dict(),
            "files_written": list(self.files_written),
            "config_sha256": self.config_sha256,
            "overlay_ranges": len(self.overlay.ranges()),
            "overlay_bytes": self.overlay.overlay_bytes,
        }

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> PreparedImage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _normalise_version(version: str) -> str:
    """balena-semver spellings of one release compare equal: "v6.5.50+rev8" and
    "6.5.50+rev8.prod" are "6.5.50+rev8"."""
    text = version.strip().removeprefix("v")
    for suffix in (".prod", ".dev"):
        text = text.removesuffix(suffix)
    return text


def check_image_matches(config: DeviceConfig, identity: ImageIdentity, *, name: str) -> None:
    """ConfigError when the settings name another device type or OS version than the image."""
    if identity.device_type is not None and not identity.is_for(config.device_type):
        raise ConfigError(
            "device_type",
            f"is {config.device_type}, but {name} is a {identity.device_type} image",
            hint=f"Set the device type to {identity.device_type} (or leave it unset), or use a "
            f"{config.device_type} image.",
        )
    if (
        config.os_version is not None
        and identity.os_version is not None
        and _normalise_version(config.os_version) != _normalise_version(identity.os_version)
    ):
        raise ConfigError(
            "os_version",
            f"is {config.os_version}, but {name} holds balenaOS {identity.os_version}",
            hint="Leave the version unset to configure the image as it is, or use an image of "
            "that version.",
        )


def _effective_config(config: DeviceConfig, image_config: dict[str, Any] | None) -> DeviceConfig:
    if config.base_config is not None or image_config is None:
        return config
    kept = {k: v for k, v in image_config.items() if k not in DEVICE_IDENTITY_KEYS}
    return replace(config, base_config=kept)


def prepare_image(
    raw_path: str | os.PathLike[str],
    config: DeviceConfig,
    *,
    base: ReadAt | None = None,
    mtime: int = FIXED_EPOCH,
    table: PartitionTable | None = None,
) -> PreparedImage:
    """Configure the raw image at `raw_path` (or the already open `base`) in an overlay.

    Validates `config` first (ConfigError before any I/O), then checks the image's device type
    and OS version against it. ImageError when the image has no usable boot partition or no
    config.json, or its boot filesystem cannot take the files.
    """
    validate_device_config(config)
    path = Path(raw_path)
    name = str(path)
    owned = None
    if base is None:
        try:
            owned = FileReader(path)
        except OSError as err:
            raise ImageError(
                name,
                f"cannot open: {err.strerror or err}",
                problem=ProblemCode.UNREADABLE,
                hint="Check the path and its permissions.",
            ) from None
        base = owned
    try:
        return _prepare(path, name, base, owned, config, mtime, table)
    except BaseException:
        if owned is not None:
            owned.close()
        raise


def _prepare(
    path: Path,
    name: str,
    base: ReadAt,
    owned: FileReader | None,
    config: DeviceConfig,
    mtime: int,
    table: PartitionTable | None,
) -> PreparedImage:
    table = table or read_partition_table(base, name=name)
    boot = open_boot_partition(base, table, name=name)
    overlay = Overlay(base)
    fs = boot_filesystem(overlay, boot, name=name)
    identity = read_identity(fs)
    check_image_matches(config, identity, name=name)
    if not fs.exists(CONFIG_PATH):
        raise ImageError(
            name,
            f"the boot partition (partition {boot.number}) has no config.json",
            problem=ProblemCode.NO_CONFIG_JSON,
            hint="Is this a balenaOS image? Flasher configures balenaOS images only.",
            action=Action.DOWNLOAD_OS,
        )
    # An explicit config.json replaces the image's, which then need not even parse.
    image_config = read_config_json(fs) if config.base_config is None else None
    config_bytes = config_json_bytes(_effective_config(config, image_config))
    written = [CONFIG_PATH]
    fs.write_file(CONFIG_PATH, config_bytes, mtime=mtime)
    keyfiles = render_keyfiles(config)
    if keyfiles:
        fs.makedirs(CONNECTIONS_DIR, mtime=mtime)
    for keyfile in keyfiles:
        target = f"{CONNECTIONS_DIR}/{keyfile.name}"
        fs.write_file(target, keyfile.content, mtime=mtime)
        written.append(target)
    return PreparedImage(
        base_path=path,
        size_bytes=base.size,
        overlay=overlay,
        table=table,
        boot_partition=boot,
        boot_label=fs.label,
        identity=identity,
        files_written=tuple(written),
        config_sha256=hashlib.sha256(config_bytes).hexdigest(),
        _owned=owned,
    )
