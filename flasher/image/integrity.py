"""Source integrity: whether an image file can tell on its own that it is corrupt, and the
optional expected SHA-256 check of the image before anything is written.

gzip, zip and bzip2 carry CRC-32s; xz carries the check its stream flags name (CRC-32, CRC-64,
SHA-256, or none with `--check=none`); zstd carries an xxhash64 only when every frame has a
content checksum. A raw image carries nothing: a flipped bit is written and "verified" as good,
because verification compares the card with the image, not the image with the original. Where
a source has no check of its own, only an expected SHA-256 (or a .bmap with checksums) can
prove the bytes. Core: never prints, imports no Qt.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flasher.cache import sha256_file
from flasher.error_codes import ProblemCode
from flasher.errors import ConfigError, ImageError
from flasher.events import CancelToken, EventCallback, Log, Phase, PhaseChanged, ignore_event
from flasher.image.bmap import read_bmap
from flasher.image.decoders import XZ_MAGIC
from flasher.image.sources import ImageSource, SourceKind, open_source
from flasher.provider import ResolvedImage, SourceSpec

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_XZ_CHECKS = {1: "crc32", 4: "crc64", 10: "sha256"}
_XZ_FOOTER_BYTES = 12


class Integrity(enum.StrEnum):
    """The check a source format carries over its decoded bytes."""

    NONE = "none"
    CRC32 = "crc32"
    CRC64 = "crc64"
    SHA256 = "sha256"
    XXHASH64 = "xxhash64"


@dataclass(frozen=True)
class IntegrityReport:
    """What protects the image: the format's own check, and whether an expected SHA-256 was
    matched (`sha256_matched`: "image" for the decoded image, "source" for the file as given)."""

    kind: Integrity
    sha256_matched: str | None = None
    bmap_checked: bool = False  # every mapped range matched a .bmap's checksums

    @property
    def checked(self) -> bool:
        return (
            self.kind is not Integrity.NONE or self.sha256_matched is not None or self.bmap_checked
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_integrity": self.kind.value,
            "sha256_matched": self.sha256_matched,
            "bmap_checked": self.bmap_checked,
        }


def parse_sha256(text: str) -> str:
    """An expected SHA-256 as 64 lowercase hex digits; ConfigError otherwise."""
    value = text.strip().lower()
    if not _SHA256_RE.match(value):
        raise ConfigError("sha256", "must be 64 hexadecimal digits (a SHA-256)")
    return value


def _xz_integrity(path: Path) -> Integrity:
    """The weaker of the first stream's header check and the last stream's footer check."""
    with open(path, "rb") as f:
        header = f.read(12)
        size = os.fstat(f.fileno()).st_size
        tail_bytes = min(size, 64 * 1024)
        f.seek(size - tail_bytes)
        tail = f.read(tail_bytes).rstrip(b"\0")  # stream padding
    checks = [header[7] & 0x0F] if header.startswith(XZ_MAGIC) and len(header) >= 8 else [0]
    if tail.endswith(b"YZ") and len(tail) >= _XZ_FOOTER_BYTES:
        checks.append(tail[-3] & 0x0F)
    names = [_XZ_CHECKS.get(c) for c in checks]
    if any(n is None for n in names):
        return Integrity.NONE
    order = ["crc32", "crc64", "sha256"]
    return Integrity(min((n for n in names if n), key=order.index))


def source_integrity(source: ImageSource) -> Integrity:
    """The integrity check `source`'s own format carries."""
    if source.kind in (SourceKind.GZIP, SourceKind.ZIP, SourceKind.BZIP2):
        return Integrity.CRC32
    if source.kind is SourceKind.XZ:
        return _xz_integrity(source.path)
    if source.kind is SourceKind.ZSTD:
        layout = source.zstd_layout
        return Integrity.XXHASH64 if layout is not None and layout.checksummed else Integrity.NONE
    return Integrity.NONE


def source_file(spec: SourceSpec, resolved: ResolvedImage) -> Path:
    """The file whose format carries (or lacks) the check: the local file as given, or the
    downloaded file in the cache, else the raw image itself."""
    if spec.path:
        return Path(spec.path)
    cached = resolved.details.get("cache_path")
    return Path(cached) if isinstance(cached, str) else resolved.raw_path


def bmap_checksummed(bmap_path: str | os.PathLike[str]) -> bool:
    """Whether every range of a .bmap carries a checksum (bmap formats 1.3 and later can; a
    checksum type with ranges that lack one proves nothing about them)."""
    return read_bmap(bmap_path).checksummed


def check_image(
    source_path: Path,
    raw_path: Path,
    expected_sha256: str | None,
    *,
    known_sha256: Mapping[Path, str] | None = None,
    sniffed: ImageSource | None = None,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> IntegrityReport:
    """The source's own integrity, and with `expected_sha256` the proof that the decoded image
    (or the file as given) has it; ImageError (problem "checksum") before anything is written
    when neither does. `known_sha256` holds digests already taken (by resolved path), so no file
    is hashed twice; `sniffed`, the source file as already opened, if it is that file."""
    if sniffed is None or sniffed.path.resolve() != source_path.resolve():
        sniffed = open_source(source_path)
    kind = source_integrity(sniffed)
    if expected_sha256 is None:
        return IntegrityReport(kind)
    known = {path.resolve(): digest for path, digest in (known_sha256 or {}).items()}
    candidates = [(raw_path.resolve(), "image")]
    if source_path.resolve() != raw_path.resolve():
        candidates.append((source_path.resolve(), "source"))
    candidates.sort(key=lambda candidate: candidate[0] not in known)  # free comparisons first
    hashing = False
    for path, matched in candidates:
        digest = known.get(path)
        if digest is None:
            if not hashing:
                on_event(PhaseChanged(Phase.CHECKING))
                hashing = True
            on_event(Log("info", f"checking the SHA-256 of {path}"))
            digest = sha256_file(path, cancel)
        if digest == expected_sha256:
            return IntegrityReport(kind, matched)
    raise ImageError(
        str(source_path),
        f"neither the file nor its decoded image has the expected SHA-256 {expected_sha256}",
        problem=ProblemCode.CHECKSUM,
        hint="The image is corrupt or not the one expected; obtain it again.",
    )


def refuse_unproven(report: IntegrityReport, source_path: Path) -> None:
    """Refuse a source nothing can prove (no check of its own, no expected SHA-256)."""
    if not report.checked:
        raise ImageError(
            str(source_path),
            "carries no integrity check of its own, so a corrupt copy would be written as good",
            problem=ProblemCode.NO_INTEGRITY,
            hint="Give the image's expected SHA-256, or use a compressed image with checksums.",
        )
