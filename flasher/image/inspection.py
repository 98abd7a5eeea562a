"""What a balenaOS image is: its partitions, boot partition, device type, OS version, current
config.json (secrets redacted), network keyfiles and how much of it holds data.

The boot-partition readers here (`open_boot_partition`, `read_identity`, `read_config_json`,
`list_keyfiles`) are shared with flasher.image.configure. Core: no printing. Imports only the
standard library and flasher (errors, events, balena.config, image.*).

Compressed sources are unpacked once into a temporary raw file (under `work_dir`, else the
system temporary directory) and inspected there: the allocation summary needs every partition's
metadata, which a stream cannot seek to. The temporary file is removed afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flasher.balena.config import redact_config
from flasher.error_codes import ProblemCode
from flasher.errors import ImageError
from flasher.events import CancelToken, EventCallback, ignore_event
from flasher.image.byteio import FileReader, ReadAt, SliceIO
from flasher.image.fat.filesystem import FatFilesystem
from flasher.image.partitions import (
    Partition,
    PartitionTable,
    filesystem_of,
    find_boot_partition,
    read_partition_table,
)
from flasher.image.sources import SourceKind, open_source
from flasher.image.sparse import allocation_map

CONFIG_PATH = "/config.json"
DEVICE_TYPE_PATH = "/device-type.json"
OS_RELEASE_PATH = "/os-release"
CONNECTIONS_DIR = "/system-connections"
_NOT_BALENA_HINT = (
    "Flasher configures balenaOS images; download one for your device type, for example from "
    "the balenaCloud dashboard."
)


@dataclass(frozen=True)
class ImageIdentity:
    """What the boot partition says the image is; None where it does not say."""

    device_type: str | None = None
    device_type_aliases: tuple[str, ...] = ()
    device_type_name: str | None = None
    os_version: str | None = None  # os-release VERSION, e.g. "6.5.50+rev8"
    variant: str | None = None  # os-release VARIANT_ID: "prod", "dev", or None (unified)
    meta_balena_version: str | None = None  # the meta-balena layer, e.g. "6.5.50"
    installer: bool = False  # a flasher image ("installation media") that installs itself

    def is_for(self, slug: str) -> bool:
        """Whether this image suits device type `slug` (its slug or one of its aliases)."""
        return slug == self.device_type or slug in self.device_type_aliases

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_type": self.device_type,
            "device_type_aliases": list(self.device_type_aliases),
            "device_type_name": self.device_type_name,
            "os_version": self.os_version,
            "variant": self.variant,
            "meta_balena_version": self.meta_balena_version,
            "installer": self.installer,
        }


@dataclass(frozen=True)
class PartitionInfo:
    number: int
    start_bytes: int
    size_bytes: int
    type_id: str
    filesystem: str  # "fat12" | "fat16" | "fat32" | "ext4" | "extended" | "unknown"
    label: str
    name: str  # GPT partition name; "" on MBR
    bootable: bool
    is_boot: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "start_bytes": self.start_bytes,
            "size_bytes": self.size_bytes,
            "type_id": self.type_id,
            "filesystem": self.filesystem,
            "label": self.label,
            "name": self.name,
            "bootable": self.bootable,
            "is_boot": self.is_boot,
        }


@dataclass(frozen=True)
class Problem:
    """Something that keeps the image from being configured, found while inspecting it."""

    code: ProblemCode
    message: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "hint": self.hint}


@dataclass(frozen=True)
class ImageInfo:
    """Everything `inspect_image` found; `to_dict` is the stable JSON form (see
    flasher.cli.image_cmds for its documentation)."""

    path: str
    source_kind: str
    file_size_bytes: int
    size_bytes: int
    unpacked: bool
    scheme: str
    disk_id: str
    partitions: tuple[PartitionInfo, ...]
    boot_partition: int | None
    identity: ImageIdentity
    config: Mapping[str, Any] | None = field(repr=False, hash=False)  # redacted
    keyfiles: tuple[str, ...]
    mapped_bytes: int
    allocation_source: str
    problems: tuple[Problem, ...] = ()

    @property
    def mapped_fraction(self) -> float:
        return self.mapped_bytes / self.size_bytes if self.size_bytes else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "source_kind": self.source_kind,
            "file_size_bytes": self.file_size_bytes,
            "size_bytes": self.size_bytes,
            "unpacked": self.unpacked,
            "partition_table": {"scheme": self.scheme, "disk_id": self.disk_id},
            "partitions": [p.to_dict() for p in self.partitions],
            "boot_partition": self.boot_partition,
            **self.identity.to_dict(),
            "config": dict(self.config) if self.config is not None else None,
            "keyfiles": list(self.keyfiles),
            "allocation": {
                "mapped_bytes": self.mapped_bytes,
                "size_bytes": self.size_bytes,
                "mapped_percent": round(100 * self.mapped_fraction, 1),
                "source": self.allocation_source,
            },
            "problems": [p.to_dict() for p in self.problems],
        }


def open_boot_partition(io: ReadAt, table: PartitionTable, *, name: str) -> Partition:
    """The boot partition as balena's tools find it, checked to hold a FAT filesystem."""
    boot = find_boot_partition(io, table)
    if boot is None:
        raise ImageError(
            name,
            "has no balenaOS boot partition (no resin-boot, balena-boot or flash-boot, and no "
            "partition 1)",
            problem=ProblemCode.NO_BOOT_PARTITION,
            hint=_NOT_BALENA_HINT,
        )
    kind = filesystem_of(io, boot).kind
    if not kind.startswith("fat"):
        raise ImageError(
            name,
            f"the boot partition (partition {boot.number}) holds {kind}, not a FAT filesystem",
            problem=ProblemCode.BOOT_NOT_FAT,
            hint=_NOT_BALENA_HINT,
        )
    return boot


def boot_filesystem(io: ReadAt, boot: Partition, *, name: str) -> FatFilesystem:
    size = min(boot.size_bytes, io.size - boot.start_bytes)
    return FatFilesystem(
        SliceIO(io, boot.start_bytes, size), name=f"{name} (boot partition {boot.number})"
    )


def _read_if_present(fs: FatFilesystem, path: str) -> bytes | None:
    return fs.read_file(path) if fs.exists(path) else None


def _json_object(fs: FatFilesystem, path: str, data: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ImageError(
            fs.name,
            f"{path} is not valid JSON ({err})",
            problem=ProblemCode.BAD_MANIFEST,
            hint="Download the image again.",
        ) from None
    if not isinstance(parsed, dict):
        raise ImageError(
            fs.name,
            f"{path} is not a JSON object",
            problem=ProblemCode.BAD_MANIFEST,
            hint="Download the image again.",
        )
    return parsed


def parse_os_release(data: bytes) -> dict[str, str]:
    """KEY=value lines of an os-release file; quotes removed, comments and junk skipped."""
    out: dict[str, str] = {}
    for raw_line in data.decode("utf-8", "replace").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key.strip()] = value
    return out


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def read_identity(fs: FatFilesystem) -> ImageIdentity:
    """Device type from /device-type.json, OS version and variant from /os-release."""
    manifest_bytes = _read_if_present(fs, DEVICE_TYPE_PATH)
    manifest = _json_object(fs, DEVICE_TYPE_PATH, manifest_bytes) if manifest_bytes else {}
    release_bytes = _read_if_present(fs, OS_RELEASE_PATH)
    release = parse_os_release(release_bytes) if release_bytes else {}
    aliases = manifest.get("aliases")
    yocto = manifest.get("yocto")
    yocto = yocto if isinstance(yocto, dict) else {}
    installer = "flasher" in str(yocto.get("image", "")) or str(
        yocto.get("deployArtifact", "")
    ).startswith(("balena-image-flasher", "resin-image-flasher"))
    return ImageIdentity(
        device_type=_text(manifest.get("slug")),
        device_type_aliases=tuple(a for a in aliases if isinstance(a, str))
        if isinstance(aliases, list)
        else (),
        device_type_name=_text(manifest.get("name")),
        os_version=_text(release.get("VERSION")) or _text(release.get("VERSION_ID")),
        variant=_text(release.get("VARIANT_ID")),
        meta_balena_version=_text(release.get("META_BALENA_VERSION")),
        installer=installer,
    )


def read_config_json(fs: FatFilesystem) -> dict[str, Any] | None:
    """The boot partition's config.json, or None when it has none."""
    data = _read_if_present(fs, CONFIG_PATH)
    return None if data is None else _json_object(fs, CONFIG_PATH, data)


def list_keyfiles(fs: FatFilesystem) -> tuple[str, ...]:
    """Names of the files in /system-connections (samples ending in .ignore included)."""
    if not fs.exists(CONNECTIONS_DIR):
        return ()
    return tuple(sorted(e.name for e in fs.listdir(CONNECTIONS_DIR) if not e.is_dir))


def inspect_image(
    path: str | os.PathLike[str],
    *,
    work_dir: str | os.PathLike[str] | None = None,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> ImageInfo:
    """Describe the image at `path` (raw or compressed). Problems that would stop `os configure`
    (no boot partition, no config.json, unreadable manifests) are reported in `problems`;
    unreadable, corrupt or truncated images raise ImageError."""
    import tempfile  # here: a flash never calls this

    source = open_source(path)
    if source.kind is SourceKind.RAW:
        return _inspect_raw(Path(path), Path(path), source.kind, source.compressed_size, False)
    with tempfile.TemporaryDirectory(prefix="flasher-inspect-", dir=work_dir) as tmp:
        raw_path = Path(tmp) / "image.raw"
        source.unpack_to(raw_path, on_event=on_event, cancel=cancel)
        return _inspect_raw(raw_path, Path(path), source.kind, source.compressed_size, True)


def _inspect_raw(
    raw_path: Path, shown_path: Path, kind: SourceKind, file_size: int, unpacked: bool
) -> ImageInfo:
    name = str(shown_path)
    with FileReader(raw_path) as io:
        table = read_partition_table(io, name=name)
        problems: list[Problem] = []
        boot: Partition | None = None
        identity = ImageIdentity()
        config: dict[str, Any] | None = None
        keyfiles: tuple[str, ...] = ()
        try:
            boot = open_boot_partition(io, table, name=name)
            fs = boot_filesystem(io, boot, name=name)
            identity = read_identity(fs)
            config = read_config_json(fs)
            keyfiles = list_keyfiles(fs)
            if config is None:
                problems.append(
                    Problem(
                        ProblemCode.NO_CONFIG_JSON,
                        f"the boot partition (partition {boot.number}) has no config.json",
                        _NOT_BALENA_HINT,
                    )
                )
        except ImageError as err:
            problems.append(Problem(err.problem, err.message, err.hint))
        amap = allocation_map(io, table, name=name)
        parts = tuple(_partition_info(io, p, boot) for p in table.partitions)
    return ImageInfo(
        path=name,
        source_kind=kind.value,
        file_size_bytes=file_size,
        size_bytes=amap.size_bytes,
        unpacked=unpacked,
        scheme=table.scheme,
        disk_id=table.disk_id,
        partitions=parts,
        boot_partition=boot.number if boot is not None else None,
        identity=identity,
        config=redact_config(config) if config is not None else None,
        keyfiles=keyfiles,
        mapped_bytes=amap.mapped_bytes,
        allocation_source=amap.source,
        problems=tuple(problems),
    )


def _partition_info(io: ReadAt, p: Partition, boot: Partition | None) -> PartitionInfo:
    info = filesystem_of(io, p)
    return PartitionInfo(
        number=p.number,
        start_bytes=p.start_bytes,
        size_bytes=p.size_bytes,
        type_id=p.type_id,
        filesystem="extended" if p.is_extended else info.kind,
        label=info.label,
        name=p.name,
        bootable=p.bootable,
        is_boot=boot is not None and p.number == boot.number,
    )


def read_image_identity(raw_path: Path, *, name: str | None = None) -> ImageIdentity:
    """Device type, OS version and variant from the boot partition of the raw image at
    `raw_path`; `name` is how errors call the image (default: its path)."""
    with FileReader(raw_path) as io:
        return read_identity_at(io, name=name or str(raw_path))


def read_identity_at(
    io: ReadAt, *, name: str, table: PartitionTable | None = None
) -> ImageIdentity:
    """Device type, OS version and variant from the boot partition of the image `io` (whose
    partition `table` may be given, read early)."""
    table = table or read_partition_table(io, name=name)
    boot = open_boot_partition(io, table, name=name)
    return read_identity(boot_filesystem(io, boot, name=name))
