"""Deterministic synthesized balenaOS images: the real partition layout, filled small.

An image for (device type, version, raw|flasher, dev?) has the layout of meta-balena's
image_types_balena: MBR with an extended partition (GPT on x86 and generic boards), a FAT16 boot
partition (`resin-boot`, or `flash-boot` on installation media) holding device-type.json,
os-release, a stock config.json, system-connections samples, splash and bootloader-like blobs,
then ext4 rootA/rootB/state/data. A flasher image carries the raw image at
/opt/balena-image-<machine>.balenaos-img in flash-rootA, as resin-init-flasher expects. Sizes
come from `ImageScale`; every byte derives from the inputs, so the same inputs give the same
SHA-256. Imports the standard library and flasher's image and sandbox modules; never requests.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flasher.image.byteio import FileReadWriter, SliceIO, WriteAt
from flasher.image.fat.filesystem import FatFilesystem, format_fat
from flasher.image.layout import (
    GPT_EFI_SYSTEM,
    GPT_LINUX_FILESYSTEM,
    MBR_FAT16_LBA,
    MBR_LINUX,
    PartitionSpec,
    write_gpt,
    write_mbr,
)
from flasher.sandbox.catalog import CatalogDeviceType, Release
from flasher.sandbox.ext4 import BLOCK_SIZE, Ext4Builder
from flasher.sandbox.manifest import device_type_json

MiB = 1024 * 1024
GENERATOR_VERSION = 1  # bump when the bytes of any image change


@dataclass(frozen=True)
class ImageScale:
    """Partition sizes of synthesized images (the real ones are GiBs; these stay small)."""

    alignment_bytes: int = 4 * MiB
    boot_bytes: int = 16 * MiB
    root_bytes: int = 12 * MiB
    state_bytes: int = 4 * MiB
    data_bytes: int = 8 * MiB
    root_fill_bytes: int = 2 * MiB
    boot_blob_bytes: int = 1 * MiB
    journal_blocks: int = 0

    @classmethod
    def tiny(cls) -> ImageScale:
        """The smallest useful layout (about 20 MiB), for fast tests."""
        return cls(1 * MiB, 8 * MiB, 4 * MiB, 1 * MiB, 2 * MiB, 256 * 1024, 128 * 1024)

    def digest(self) -> str:
        fields = json.dumps(self.__dict__, sort_keys=True)
        return hashlib.sha256(f"{GENERATOR_VERSION}:{fields}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ImageSpec:
    """What to synthesize; `development` switches on dev mode in the stock config.json."""

    device_type: CatalogDeviceType
    release: Release
    image_type: str = "raw"
    development: bool = False

    @property
    def seed(self) -> str:
        dev = "dev" if self.development else "prod"
        return f"{self.device_type.slug}:{self.release.raw_version}:{self.image_type}:{dev}"

    @property
    def mtime(self) -> int:
        when = datetime.fromisoformat(self.release.created_at.replace("Z", "+00:00"))
        return int(when.timestamp())


@dataclass(frozen=True)
class PartitionInfo:
    number: int
    label: str
    start_bytes: int
    size_bytes: int
    filesystem: str


@dataclass(frozen=True)
class ImageLayout:
    scheme: str
    size_bytes: int
    partitions: tuple[PartitionInfo, ...]

    @property
    def boot(self) -> PartitionInfo:
        return self.partitions[0]


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def plan_layout(
    spec: ImageSpec, scale: ImageScale, *, root_bytes: int | None = None
) -> ImageLayout:
    """Where each partition goes; labels follow the raw/flasher naming of meta-balena."""
    flasher = spec.image_type == "flasher"
    prefix = "flash" if flasher else "resin"
    root = root_bytes or scale.root_bytes
    sizes = [
        (f"{prefix}-boot", scale.boot_bytes, "fat16"),
        (f"{prefix}-rootA", root, "ext4"),
        (f"{prefix}-rootB", scale.root_bytes // (4 if flasher else 1), "ext4"),
    ]
    if not flasher:
        sizes += [
            ("resin-state", scale.state_bytes, "ext4"),
            ("resin-data", scale.data_bytes, "ext4"),
        ]
    gpt = spec.device_type.partition_scheme == "gpt"
    align = scale.alignment_bytes
    parts = []
    offset = align
    for number, (label, size, fs) in enumerate(sizes, start=1):
        if not gpt and number >= 4:
            offset += align  # room for each logical partition's extended boot record
        parts.append(
            PartitionInfo(
                number + (1 if not gpt and number >= 4 else 0),
                label,
                offset,
                _align(size, BLOCK_SIZE),
                fs,
            )
        )
        offset = _align(offset + size, align)
    total = offset + (align if gpt else 0)  # GPT keeps its backup header after the last one
    return ImageLayout("gpt" if gpt else "mbr", total, tuple(parts))


def _rng(spec: ImageSpec, purpose: str) -> random.Random:
    return random.Random(f"{spec.seed}:{purpose}")


def _uuid(spec: ImageSpec, purpose: str) -> bytes:
    return hashlib.sha256(f"{spec.seed}:{purpose}".encode()).digest()[:16]


def os_release(spec: ImageSpec) -> bytes:
    release = spec.release
    dev = release.is_development
    base = next((t.value for t in release.tags if t.tag_key == "meta-balena-base"), None)
    meta_version = base or f"{release.parsed.major}.{release.parsed.minor}.{release.parsed.patch}"
    board_rev = hashlib.sha1(spec.seed.encode()).hexdigest()[:7]
    lines = [
        'ID="balena-os"',
        'NAME="balenaOS"',
        f'VERSION="{release.raw_version}"',
        f'VERSION_ID="{release.raw_version}"',
        f'PRETTY_NAME="balenaOS {release.raw_version}"',
        f'MACHINE="{spec.device_type.slug}"',
        f'VARIANT="{"Development" if dev else "Production"}"',
        f'VARIANT_ID="{"dev" if dev else "prod"}"',
        f'META_BALENA_VERSION="{meta_version}"',
        f'BALENA_BOARD_REV="{board_rev}"',
        f'SLUG="{spec.device_type.slug}"',
    ]
    return ("\n".join(lines) + "\n").encode()


def stock_config(spec: ImageSpec) -> dict[str, object]:
    """config.json of an unconfigured image (dev mode only when asked for on a unified release)."""
    config: dict[str, object] = {"deviceType": spec.device_type.slug, "persistentLogging": False}
    if spec.development and not spec.release.variant:
        config["developmentMode"] = True
    return config


_SAMPLE_CONNECTION = b"""[connection]
id=balena-wifi
type=wifi

[wifi]
hidden=true
mode=infrastructure
ssid=My_Wifi_Ssid

[wifi-security]
auth-alg=open
key-mgmt=wpa-psk
psk=super_secret_wifi_password

[ipv4]
method=auto

[ipv6]
addr-gen-mode=stable-privacy
method=auto
"""

_CONNECTIONS_README = b"""Files in this directory are NetworkManager connection profiles.
balenaOS copies them to /etc/NetworkManager/system-connections/ at every boot.
Files ending in .ignore are samples and are not used.
"""


def _bootloader_files(spec: ImageSpec, budget: int) -> dict[str, bytes]:
    """Bootloader-shaped files of the board family, pseudo-random bodies, `budget` bytes total."""
    slug, arch = spec.device_type.slug, spec.device_type.arch
    if slug.startswith(("raspberry", "fincm")):
        names = ["start4.elf", "fixup4.dat", "bootcode.bin", "u-boot.bin", "bcm2711-rpi-4-b.dtb"]
        texts = {
            "config.txt": b"arm_64bit=1\nkernel=u-boot.bin\nenable_uart=1\ndtoverlay=vc4-kms-v3d\n",
            "cmdline.txt": b"dwc_otg.lpm_enable=0 rootwait\n",
        }
    elif arch in ("amd64", "i386"):
        names = ["EFI/BOOT/bootx64.efi", "EFI/BOOT/grubx64.efi", "bzImage"]
        texts = {"EFI/BOOT/grub.cfg": b"set timeout=3\nsearch --set=root --label resin-rootA\n"}
    else:
        names = ["MLO", "u-boot.img", "Image"]
        texts = {"uEnv.txt": b"bootpart=1:1\nbootdir=\n"}
    weights = [4, 2, 1, 1, 1][: len(names)]
    total = sum(weights)
    files = dict(texts)
    for name, weight in zip(names, weights, strict=True):
        files[name] = _rng(spec, name).randbytes(budget * weight // total)
    return files


def _splash_png(spec: ImageSpec) -> bytes:
    """A valid 64x64 grey-scale PNG, a stand-in for balena-logo.png."""
    rows = b"".join(b"\0" + bytes((x * 4 + y) % 256 for x in range(64)) for y in range(64))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def boot_files(spec: ImageSpec, scale: ImageScale) -> dict[str, bytes]:
    """Every file of the boot partition, by path."""
    flag = "balena-image-flasher" if spec.image_type == "flasher" else "balena-image"
    files = {
        "device-type.json": json.dumps(device_type_json(spec.device_type), indent=2).encode(),
        "os-release": os_release(spec),
        "config.json": json.dumps(stock_config(spec), separators=(",", ":")).encode(),
        flag: b"",
        "image-version-info": f"{spec.release.raw_version}\n".encode(),
        "system-connections/balena-sample.ignore": _SAMPLE_CONNECTION,
        "system-connections/README.ignore": _CONNECTIONS_README,
        "system-proxy/README.ignore": b"Put redsocks.conf and no_proxy here to use a proxy.\n",
        "splash/balena-logo.png": _splash_png(spec),
    }
    files.update(_bootloader_files(spec, scale.boot_blob_bytes))
    return files


def _write_boot(io: WriteAt, part: PartitionInfo, spec: ImageSpec, scale: ImageScale) -> None:
    fs_io = SliceIO(io, part.start_bytes, part.size_bytes)
    volume_id = int.from_bytes(_uuid(spec, "boot")[:4], "little")
    format_fat(
        fs_io,
        label=part.label,
        fat_bits=16,
        volume_id=volume_id,
        hidden_sectors=part.start_bytes // 512,
    )
    fs = FatFilesystem(fs_io, name=part.label)
    for path, data in sorted(boot_files(spec, scale).items()):
        if "/" in path:
            fs.makedirs(path.rsplit("/", 1)[0], mtime=spec.mtime)
        fs.write_file(path, data, mtime=spec.mtime)


def _root_builder(part: PartitionInfo, spec: ImageSpec, scale: ImageScale) -> Ext4Builder:
    fs = Ext4Builder(
        part.size_bytes,
        label=part.label,
        uuid=_uuid(spec, part.label),
        mtime=spec.mtime,
        journal_blocks=scale.journal_blocks,
    )
    fs.add_file("etc/os-release", os_release(spec))
    fs.add_file("etc/hostname", b"balena\n")
    fs.add_file("etc/issue", f"balenaOS {spec.release.raw_version} \\n \\l\n".encode())
    fs.add_symlink("etc/mtab", "/proc/mounts")
    fs.add_file("etc/balena-supervisor/supervisor.conf", b"SUPERVISOR_IMAGE=balena/supervisor\n")
    fs.add_dir("mnt/boot")
    fs.add_dir("resin-boot")
    fs.add_file("usr/lib/balena/rootfs.bin", _rng(spec, "rootfs").randbytes(scale.root_fill_bytes))
    return fs


def _write_ext4(io: WriteAt, part: PartitionInfo, builder: Ext4Builder) -> None:
    builder.write(SliceIO(io, part.start_bytes, part.size_bytes))


def _simple_fs(part: PartitionInfo, spec: ImageSpec, scale: ImageScale) -> Ext4Builder:
    fs = Ext4Builder(
        part.size_bytes,
        label=part.label,
        uuid=_uuid(spec, part.label),
        mtime=spec.mtime,
        journal_blocks=scale.journal_blocks,
    )
    if part.label == "resin-state":
        fs.add_file("remove_me_to_reset", b"")
        fs.add_dir("root-overlay/etc/NetworkManager/system-connections")
    elif part.label == "resin-data":
        fs.add_dir("resin-data")
        fs.add_dir("docker")
    return fs


def synthesize(path: str | os.PathLike[str], spec: ImageSpec, scale: ImageScale) -> ImageLayout:
    """Write the image for `spec` to `path` (created or truncated); returns its layout."""
    inner: bytes | None = None
    root_bytes = None
    if spec.image_type == "flasher":
        raw = ImageSpec(spec.device_type, spec.release, "raw", spec.development)
        inner_path = Path(f"{os.fspath(path)}.inner")
        try:
            synthesize(inner_path, raw, scale)
            inner = inner_path.read_bytes()
        finally:
            inner_path.unlink(missing_ok=True)
        stored = sum(
            BLOCK_SIZE
            for i in range(0, len(inner), BLOCK_SIZE)
            if inner[i : i + BLOCK_SIZE].count(0) != min(BLOCK_SIZE, len(inner) - i)
        )
        root_bytes = _align(scale.root_bytes + stored + 2 * MiB, MiB)
    layout = plan_layout(spec, scale, root_bytes=root_bytes)
    with open(path, "wb") as f:
        f.truncate(layout.size_bytes)
    with FileReadWriter(path) as io:
        specs = [
            PartitionSpec(
                p.start_bytes,
                p.size_bytes,
                _gpt_type(p) if layout.scheme == "gpt" else _mbr_type(p),
                name=p.label if layout.scheme == "gpt" else "",
                bootable=p.number == 1,
                logical=p.number >= 5,
            )
            for p in layout.partitions
        ]
        if layout.scheme == "gpt":
            write_gpt(io, specs, seed=spec.seed)
        else:
            disk_signature = int.from_bytes(_uuid(spec, "disk")[:4], "little")
            write_mbr(io, specs, disk_signature=disk_signature)
        _write_boot(io, layout.boot, spec, scale)
        for part in layout.partitions[1:]:
            if part.label.endswith("rootA"):
                builder = _root_builder(part, spec, scale)
                if inner is not None:
                    machine = spec.device_type.slug
                    builder.add_file(f"opt/balena-image-{machine}.balenaos-img", inner)
            else:
                builder = _simple_fs(part, spec, scale)
            _write_ext4(io, part, builder)
    return layout


def _gpt_type(part: PartitionInfo) -> str:
    return GPT_EFI_SYSTEM if part.filesystem.startswith("fat") else GPT_LINUX_FILESYSTEM


def _mbr_type(part: PartitionInfo) -> str:
    return MBR_FAT16_LBA if part.filesystem.startswith("fat") else MBR_LINUX
