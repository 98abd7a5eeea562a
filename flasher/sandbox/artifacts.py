"""Files the sandbox's /download serves: synthesized images, cached on disk, plus .gz/.zip.

Stock images are generated once per (device type, version, image type, dev mode, scale) and
kept under the cache directory with a sidecar holding their SHA-256 (the ETag) and boot
partition offset; generation is deterministic, so a cached file is always the right one.
Compressed variants are made from them with fixed timestamps, so they are deterministic too.
Configured images (a fleet's config.json and keyfiles written into the boot partition) differ
per request and are built in a private temporary file the caller deletes after sending.
Imports the standard library and flasher's image, balena.config and sandbox modules.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from flasher.image.byteio import FileReadWriter, SliceIO
from flasher.image.fat.filesystem import FatFilesystem
from flasher.models import Keyfile
from flasher.sandbox.images import ImageScale, ImageSpec, synthesize

CHUNK_BYTES = 1024 * 1024
FILE_TYPES = {
    ".img": "application/octet-stream",
    ".gz": "application/octet-stream",
    ".zip": "application/zip",
}


@dataclass(frozen=True)
class Artifact:
    """A file ready to send: `filename` for Content-Disposition, `sha256` as the ETag."""

    path: Path
    size_bytes: int
    sha256: str
    filename: str
    content_type: str
    temporary: bool = False

    def discard(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Stock:
    path: Path
    sha256: str
    boot_offset: int
    boot_size: int


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class ImageStore:
    """Generates, caches and packages sandbox images under `cache_dir`."""

    def __init__(self, cache_dir: str | os.PathLike[str], scale: ImageScale) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.scale = scale
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _key(self, spec: ImageSpec) -> str:
        dev = "dev" if spec.development else "prod"
        return (
            f"{spec.device_type.slug}_{spec.release.raw_version}_{spec.image_type}_{dev}_"
            f"{self.scale.digest()}"
        )

    def stock(self, spec: ImageSpec) -> _Stock:
        """The cached unconfigured raw image for `spec`, generated on first use."""
        key = self._key(spec)
        path = self.cache_dir / f"{key}.img"
        meta_path = self.cache_dir / f"{key}.json"
        with self._lock(key):
            if not (path.is_file() and meta_path.is_file()):
                fd, tmp_name = tempfile.mkstemp(dir=self.cache_dir, suffix=".part")
                os.close(fd)
                tmp = Path(tmp_name)
                try:
                    layout = synthesize(tmp, spec, self.scale)
                    meta = {
                        "sha256": _sha256_of(tmp),
                        "boot_offset": layout.boot.start_bytes,
                        "boot_size": layout.boot.size_bytes,
                    }
                    os.replace(tmp, path)
                finally:
                    tmp.unlink(missing_ok=True)
                meta_path.write_text(json.dumps(meta))
            meta = json.loads(meta_path.read_text())
        return _Stock(path, meta["sha256"], meta["boot_offset"], meta["boot_size"])

    def artifact(self, spec: ImageSpec, file_type: str, *, filename: str) -> Artifact:
        """The stock image as `.img`, `.gz` or `.zip` (cached); `filename` ends in `.img`."""
        stock = self.stock(spec)
        if file_type == ".img":
            return Artifact(
                stock.path, stock.path.stat().st_size, stock.sha256, filename, FILE_TYPES[".img"]
            )
        key = f"{self._key(spec)}{file_type}"
        packed = self.cache_dir / key
        digest_path = self.cache_dir / f"{key}.sha256"
        with self._lock(key):
            if not (packed.is_file() and digest_path.is_file()):
                fd, tmp_name = tempfile.mkstemp(dir=self.cache_dir, suffix=".part")
                with os.fdopen(fd, "wb") as out:
                    _pack(stock.path, out, file_type, member=filename, mtime=spec.mtime)
                os.replace(tmp_name, packed)
                digest_path.write_text(_sha256_of(packed))
            digest = digest_path.read_text()
        return Artifact(
            packed, packed.stat().st_size, digest, filename + file_type, FILE_TYPES[file_type]
        )

    def configured(
        self,
        spec: ImageSpec,
        file_type: str,
        *,
        filename: str,
        config_json: bytes,
        keyfiles: Sequence[Keyfile],
    ) -> Artifact:
        """A private copy of the stock image with config.json and keyfiles in its boot partition."""
        stock = self.stock(spec)
        fd, raw_name = tempfile.mkstemp(dir=self.cache_dir, suffix=".img")
        os.close(fd)
        raw = Path(raw_name)
        try:
            shutil.copyfile(stock.path, raw)
            with FileReadWriter(raw) as io:
                fs = FatFilesystem(
                    SliceIO(io, stock.boot_offset, stock.boot_size), name="boot partition"
                )
                fs.write_file("config.json", config_json, mtime=spec.mtime)
                for keyfile in keyfiles:
                    fs.write_file(
                        f"system-connections/{keyfile.name}", keyfile.content, mtime=spec.mtime
                    )
            if file_type == ".img":
                result = raw
            else:
                fd, packed_name = tempfile.mkstemp(dir=self.cache_dir, suffix=file_type)
                with os.fdopen(fd, "wb") as out:
                    _pack(raw, out, file_type, member=filename, mtime=spec.mtime)
                raw.unlink()
                result = Path(packed_name)
        except BaseException:
            raw.unlink(missing_ok=True)
            raise
        name = filename if file_type == ".img" else filename + file_type
        return Artifact(
            result,
            result.stat().st_size,
            _sha256_of(result),
            name,
            FILE_TYPES[file_type],
            temporary=True,
        )


def _pack(source: Path, out: BinaryIO, file_type: str, *, member: str, mtime: int) -> None:
    with source.open("rb") as src:
        if file_type == ".gz":
            # mtime and name fixed so the same image always gives the same .gz
            with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
                shutil.copyfileobj(src, gz, CHUNK_BYTES)
        else:
            stamp = datetime.fromtimestamp(mtime, UTC).timetuple()[:6]
            info = zipfile.ZipInfo(member, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            with zipfile.ZipFile(out, "w") as zf, zf.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
