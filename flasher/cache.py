"""The image cache: content-addressed, read-only image files, a JSON index, per-key locks.

Layout under the root (user cache dir + "/images", or $FLASHER_CACHE_DIR, or injected):

    <sha256><suffix>       a stored image (mode 0444: the cache never modifies an image)
    <sha256>.raw           the raw unpacked copy of a compressed image ("decompress once")
    local-<digest>.raw     the raw unpacked copy of a compressed file the user has locally,
                           keyed by its path, size and change time (it is not copied or
                           hashed first); pruned by age like other files the index does not list
    index.json             metadata per sha256, plus which download key gave which sha256
    locks/<digest>.lock    flock'ed while a key is fetched or an image unpacked, so two
                           processes never fetch or unpack the same thing twice
    partial/<digest>.part  a download in progress (flasher.download owns these)

The index is replaced atomically under its own lock. Imports only the standard library,
platformdirs and flasher (errors, events, image.sources); never prints.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import platformdirs

from flasher.error_codes import Action
from flasher.errors import CacheError
from flasher.events import CancelToken, EventCallback, ignore_event
from flasher.image.sources import SourceKind, open_source

INDEX_VERSION = 1
LOCK_POLL_S = 0.1
_HASH_CHUNK_BYTES = 4 * 1024 * 1024


def default_cache_root() -> Path:
    env = os.environ.get("FLASHER_CACHE_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("flasher")) / "images"


def key_digest(key: str) -> str:
    """A file-name-safe stand-in for a download key."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def sha256_file(path: Path, cancel: CancelToken | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            if cancel is not None:
                cancel.check()
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageMeta:
    """What an image is, as far as the caller knows (all optional)."""

    device_type: str | None = None
    os_version: str | None = None
    file_type: str | None = None  # as requested or served: ".img", ".zip", ".gz", ...
    image_type: str | None = None  # "raw" | "flasher"
    development: bool | None = None
    source_url: str | None = None


@dataclass(frozen=True)
class CacheEntry:
    sha256: str
    path: Path
    size_bytes: int
    kind: str  # the sniffed SourceKind value
    meta: ImageMeta
    added_at: float
    used_at: float
    keys: tuple[str, ...] = ()
    unpacked_path: Path | None = None
    unpacked_size_bytes: int | None = None
    disk_bytes: int = field(default=0, compare=False)  # allocated on disk, unpacked copy too

    def to_dict(self) -> dict[str, Any]:
        def iso(ts: float) -> str:
            return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")

        return {
            "sha256": self.sha256,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "kind": self.kind,
            "device_type": self.meta.device_type,
            "os_version": self.meta.os_version,
            "file_type": self.meta.file_type,
            "image_type": self.meta.image_type,
            "development": self.meta.development,
            "source_url": self.meta.source_url,
            "added_at": iso(self.added_at),
            "used_at": iso(self.used_at),
            "unpacked_path": str(self.unpacked_path) if self.unpacked_path else None,
            "unpacked_size_bytes": self.unpacked_size_bytes,
            "disk_bytes": self.disk_bytes,
        }


@dataclass(frozen=True)
class PruneReport:
    removed: tuple[CacheEntry, ...]
    freed_bytes: int
    busy: tuple[str, ...]  # sha256 of entries kept because another process is using them


def _suffix_for(kind: str) -> str:
    return {"raw": ".img"}.get(kind, f".{kind}")


class ImageCache:
    """A content-addressed store of downloaded images; safe across processes."""

    def __init__(self, root: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self._clock = clock

    # --- layout ---------------------------------------------------------------------------

    @property
    def _index_path(self) -> Path:
        return self.root / "index.json"

    def partial_path(self, key: str) -> Path:
        """Where a download of `key` accumulates until it is verified and added."""
        return self._ensure("partial") / f"{key_digest(key)}.part"

    def _ensure(self, sub: str = "") -> Path:
        path = self.root / sub if sub else self.root
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CacheError(
                f"Cannot create the image cache folder {path}.",
                hint="Check that the folder can be written.",
                action=Action.SET_CACHE_DIR,
                path=str(path),
                cause=err.strerror,
            ) from None
        return path

    # --- locking --------------------------------------------------------------------------

    @contextmanager
    def lock(
        self,
        name: str,
        *,
        cancel: CancelToken | None = None,
        on_wait: Callable[[], None] | None = None,
        blocking: bool = True,
    ) -> Iterator[bool]:
        """Hold the lock called `name` (a download key, or "unpack:<sha256>"). Waits while
        another process holds it (calling `on_wait` once), or yields False at once when not
        `blocking`. Released when the block ends, or when the process dies."""
        path = self._ensure("locks") / f"{key_digest(name)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            held = _try_flock(fd)
            if not held and blocking:
                if on_wait is not None:
                    on_wait()
                while not held:
                    if cancel is not None:
                        cancel.check()
                        cancel.wait(LOCK_POLL_S)
                    else:
                        time.sleep(LOCK_POLL_S)
                    held = _try_flock(fd)
            yield held
        finally:
            os.close(fd)

    @contextmanager
    def _index_lock(self) -> Iterator[dict[str, Any]]:
        """The index, to modify in place; written back atomically when the block ends."""
        self._ensure()
        fd = os.open(self.root / "index.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            index = self._read_index()
            yield index
            tmp = self.root / f".index.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, self._index_path)
        finally:
            os.close(fd)

    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads(self._index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = None
        except (OSError, ValueError):
            # A damaged index only loses metadata: the files are named by their hashes.
            data = None
        if not isinstance(data, dict) or data.get("version") != INDEX_VERSION:
            data = {"version": INDEX_VERSION, "images": {}, "keys": {}}
        data.setdefault("images", {})
        data.setdefault("keys", {})
        return data

    # --- reading --------------------------------------------------------------------------

    def _entry(self, sha: str, record: dict[str, Any], keys: dict[str, str]) -> CacheEntry | None:
        path = self.root / str(record.get("file", ""))
        try:
            info = path.stat()
        except OSError:
            return None
        if info.st_size != record.get("size_bytes"):
            return None
        unpacked = record.get("unpacked")
        unpacked_path: Path | None = None
        unpacked_size: int | None = None
        disk = info.st_blocks * 512
        if isinstance(unpacked, dict):
            candidate = self.root / str(unpacked.get("file", ""))
            try:
                raw_info = candidate.stat()
            except OSError:
                raw_info = None
            if raw_info is not None and raw_info.st_size == unpacked.get("size_bytes"):
                unpacked_path, unpacked_size = candidate, raw_info.st_size
                disk += raw_info.st_blocks * 512
        meta = ImageMeta(**{k: record.get(k) for k in ImageMeta.__dataclass_fields__})
        return CacheEntry(
            sha256=sha,
            path=path,
            size_bytes=info.st_size,
            kind=str(record.get("kind", "raw")),
            meta=meta,
            added_at=float(record.get("added_at", 0.0)),
            used_at=float(record.get("used_at", 0.0)),
            keys=tuple(sorted(k for k, v in keys.items() if v == sha)),
            unpacked_path=unpacked_path,
            unpacked_size_bytes=unpacked_size,
            disk_bytes=disk,
        )

    def entries(self) -> list[CacheEntry]:
        """Every usable image, most recently used first."""
        index = self._read_index()
        found = (self._entry(sha, rec, index["keys"]) for sha, rec in index["images"].items())
        return sorted((e for e in found if e is not None), key=lambda e: e.used_at, reverse=True)

    def get(self, sha256: str) -> CacheEntry | None:
        index = self._read_index()
        record = index["images"].get(sha256)
        return self._entry(sha256, record, index["keys"]) if record else None

    def find(self, key: str) -> CacheEntry | None:
        """The image a download `key` gave before, if it is still here."""
        sha = self._read_index()["keys"].get(key)
        return self.get(sha) if isinstance(sha, str) else None

    def touch(self, sha256: str) -> None:
        with self._index_lock() as index:
            record = index["images"].get(sha256)
            if record is not None:
                record["used_at"] = self._clock()

    # --- adding ---------------------------------------------------------------------------

    def add_file(
        self,
        path: Path,
        *,
        meta: ImageMeta,
        key: str | None = None,
        sha256: str | None = None,
        move: bool = False,
        cancel: CancelToken | None = None,
    ) -> CacheEntry:
        """Store `path` (moved when `move`, else copied) under its SHA-256, read-only, and
        remember `key` -> sha256. The content is sniffed first: only images get in."""
        source = open_source(path)
        sha = sha256 or sha256_file(path, cancel)
        target = self._ensure() / f"{sha}{_suffix_for(source.kind.value)}"
        if not target.exists():
            staging = self.root / f".{sha}.{os.getpid()}.tmp"
            try:
                if move:
                    os.replace(path, staging)
                else:
                    shutil.copyfile(path, staging)
                os.chmod(staging, 0o444)
                os.replace(staging, target)
            except OSError as err:
                staging.unlink(missing_ok=True)
                raise CacheError(
                    f"Cannot store the image in the cache ({self.root}).",
                    hint="Free some disk space.",
                    action=Action.SET_CACHE_DIR,
                    path=str(self.root),
                    cause=err.strerror,
                ) from None
        elif move:
            path.unlink(missing_ok=True)
        now = self._clock()
        with self._index_lock() as index:
            record = index["images"].get(sha) or {"added_at": now}
            record.update(
                file=target.name,
                size_bytes=target.stat().st_size,
                kind=source.kind.value,
                used_at=now,
            )
            for name, value in vars(meta).items():
                if value is not None or name not in record:
                    record[name] = value
            index["images"][sha] = record
            if key is not None:
                index["keys"][key] = sha
            keys = dict(index["keys"])
        entry = self._entry(sha, record, keys)
        if entry is None:
            raise CacheError(f"The cached image {target} vanished while it was being added.")
        return entry

    def unpacked_local(
        self,
        path: Path,
        key: str,
        *,
        on_event: EventCallback = ignore_event,
        cancel: CancelToken | None = None,
    ) -> Path:
        """The raw image of the local compressed file `path`, unpacked once for `key` (which
        must change when the file does). Its use refreshes its age for `prune`."""
        target = self.local_unpacked_path(key)
        with self.lock(f"unpack:{key}", cancel=cancel):
            if target.exists():
                os.utime(target)
                return target
            open_source(path).unpack_to(target, on_event=on_event, cancel=cancel)
            os.chmod(target, 0o444)
        return target

    def unpacked(
        self,
        entry: CacheEntry,
        *,
        on_event: EventCallback = ignore_event,
        cancel: CancelToken | None = None,
    ) -> Path:
        """The raw image for `entry`: the file itself when it is raw, else its unpacked copy,
        made once (under a lock, so concurrent callers wait and share it)."""
        if entry.kind == SourceKind.RAW.value:
            return entry.path
        with self.lock(f"unpack:{entry.sha256}", cancel=cancel):
            current = self.get(entry.sha256)
            if current is not None and current.unpacked_path is not None:
                return current.unpacked_path
            target = self.root / f"{entry.sha256}.raw"
            target.unlink(missing_ok=True)  # a leftover the index does not vouch for
            size = open_source(entry.path).unpack_to(target, on_event=on_event, cancel=cancel)
            os.chmod(target, 0o444)
            self.record_unpacked(entry.sha256, target, size)
        return target

    def local_unpacked_path(self, key: str) -> Path:
        """Where the raw image of a local compressed file with `key` is unpacked."""
        return self._ensure() / f"local-{key_digest(key)}.raw"

    def record_unpacked(self, sha256: str, target: Path, size_bytes: int) -> None:
        """Note in the index that `target` (complete, read-only) is the image's raw copy."""
        with self._index_lock() as index:
            record = index["images"].get(sha256)
            if record is not None:
                record["unpacked"] = {"file": target.name, "size_bytes": size_bytes}
                record["used_at"] = self._clock()

    # --- removing -------------------------------------------------------------------------

    def remove(self, sha256: str) -> int:
        """Delete an image and its unpacked copy; returns the bytes freed on disk."""
        freed = 0
        with self._index_lock() as index:
            record = index["images"].pop(sha256, None)
            index["keys"] = {k: v for k, v in index["keys"].items() if v != sha256}
        if record is not None:
            names = [record.get("file"), (record.get("unpacked") or {}).get("file")]
            for name in filter(None, names):
                path = self.root / str(name)
                try:
                    freed += path.stat().st_blocks * 512
                    path.unlink()
                except FileNotFoundError:
                    pass
        return freed

    def prune(
        self,
        *,
        older_than_s: float | None = None,
        keep: int | None = None,
        max_size_bytes: int | None = None,
        everything: bool = False,
    ) -> PruneReport:
        """Remove images not used for `older_than_s`, beyond the `keep` most recently used,
        or least recently used first until the cache fits `max_size_bytes`; `everything`
        empties it. Partial downloads go with `everything`, or when older than `older_than_s`.
        Images in use elsewhere are kept."""
        entries = self.entries()  # most recently used first
        now = self._clock()
        doomed: list[CacheEntry] = []
        for position, entry in enumerate(entries):
            if (
                everything
                or (older_than_s is not None and now - entry.used_at > older_than_s)
                or (keep is not None and position >= keep)
            ):
                doomed.append(entry)
        if max_size_bytes is not None:
            total = sum(e.disk_bytes for e in entries if e not in doomed)
            for entry in reversed(entries):
                if total <= max_size_bytes:
                    break
                if entry not in doomed:
                    doomed.append(entry)
                    total -= entry.disk_bytes
        removed: list[CacheEntry] = []
        busy: list[str] = []
        freed = 0
        for entry in doomed:
            if self._in_use(entry):
                busy.append(entry.sha256)
                continue
            freed += self.remove(entry.sha256)
            removed.append(entry)
        if everything or older_than_s is not None:
            freed += self._remove_strays(0.0 if everything else older_than_s or 0.0)
        return PruneReport(tuple(removed), freed, tuple(busy))

    def _in_use(self, entry: CacheEntry) -> bool:
        for name in (*entry.keys, f"unpack:{entry.sha256}"):
            with self.lock(name, blocking=False) as held:
                if not held:
                    return True
        return False

    def _remove_strays(self, min_age_s: float) -> int:
        """Partial downloads nobody is writing and files the index does not know, untouched for
        `min_age_s` (temporary files of operations that may still run elsewhere: an hour)."""
        known = {"index.json", "index.lock"}
        for record in self._read_index()["images"].values():
            known.add(str(record.get("file")))
            known.add(str((record.get("unpacked") or {}).get("file")))
        candidates = [p for p in self.root.iterdir() if p.name not in known and p.is_file()]
        partial = self.root / "partial"
        if partial.is_dir():
            candidates += [p for p in partial.iterdir() if not self._partial_busy(p)]
        freed = 0
        for path in candidates:
            try:
                info = path.stat()
                age_s = self._clock() - info.st_mtime
                if (min_age_s > 0 and age_s < min_age_s) or (
                    path.name.startswith(".") and age_s < 3600.0
                ):
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            freed += info.st_blocks * 512
        return freed

    def _partial_busy(self, path: Path) -> bool:
        lock = self.root / "locks" / f"{path.name.split('.')[0]}.lock"
        if not lock.exists():
            return False
        fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        try:
            return not _try_flock(fd)
        finally:
            os.close(fd)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
