"""Unpacking a compressed image into the cache on a thread, while the flash reads what is done.

`start_unpack` takes the cache's unpack lock and, unless the raw image is already there, decodes
the source into the cache's temporary file on a thread (`BackgroundUnpack`): the image cache
ends with the complete raw image exactly as `ImageCache.unpacked`/`unpacked_local` leave it,
and a failed or cancelled decode leaves nothing that looks complete (the temporary file is
removed). Meanwhile `reader()` reads the image, waiting until the bytes asked for are decoded
(the partition table and the boot partition come first: identity and configuration need no
more), and `growth` publishes the data extents for the writer to follow
(flasher.writer.growing); once the stream has ended and passed its own check, `when_complete`'s
callback turns the complete file into the allocation map that completes `growth`.

Imports only the standard library and flasher (cache, errors, events, image.sources,
writer.growing); never prints.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from flasher.cache import CacheEntry, ImageCache
from flasher.errors import Cancelled, FlasherError, ImageError
from flasher.events import CancelToken, EventCallback, Log, ignore_event
from flasher.image.sources import ImageSource, SourceKind
from flasher.writer.growing import Growth, Range

PUBLISH_BYTES = 4 * 1024 * 1024  # data extents go to the writer at least this often
POLL_S = 0.1
ALIGN_BYTES = 4096
SIZE_PROBE_BYTES = 64 * 1024  # the MBR and a GPT header, for 512- or 4096-byte sectors
SIZE_SLACK_BYTES = 64 * 1024 * 1024

# The allocation map's ranges (None: every byte) and its scrub ranges.
CompleteFn = Callable[["GrowingReader"], tuple[tuple[Range, ...] | None, tuple[Range, ...]]]


class GrowingReader:
    """A ReadAt over the image being decoded: `pread` waits until its bytes are decoded."""

    def __init__(self, unpack: BackgroundUnpack) -> None:
        self._unpack = unpack

    @property
    def size(self) -> int:
        return self._unpack.size_bytes

    def pread(self, length: int, offset: int) -> bytes:
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        fd = self._unpack.wait_for(end)
        data = os.pread(fd, end - offset, offset)
        # Zero blocks at the end of what is decoded so far are holes past the file's end yet.
        return data + bytes(end - offset - len(data))

    def close(self) -> None:
        """Nothing to release: the decoding owns the file."""


class BackgroundUnpack:
    """One decode of `source` into `target` (through a temporary file), on a thread."""

    def __init__(
        self,
        source: ImageSource,
        target: Path,
        size_bytes: int | None,
        *,
        locks: ExitStack,
        on_done: Callable[[int], None],
        on_event: EventCallback,
        cancel: CancelToken,
    ) -> None:
        self.source = source
        self.target = target
        # A gzip trailer gives the size modulo 2**32 only: resolved from the partition table.
        self._size: int | None = size_bytes
        self._size_known = size_bytes is not None
        self._isize = _gzip_isize(source.path) if size_bytes is None else None
        self._growth = Growth(size_bytes) if size_bytes is not None else None
        self._locks = locks
        self._on_done = on_done
        self._on_event = on_event
        self.cancel = CancelToken()
        cancel.on_cancel(self.cancel.cancel)
        self._cond = threading.Condition()
        self._fd = -1
        self._frontier = 0
        self._finished = False
        self._complete_fn: CompleteFn | None = None
        self._pending: list[Range] = []
        self._published_at = 0
        self._published_end = 0
        self.error: FlasherError | None = None
        self._thread = threading.Thread(target=self._run, name="flasher-unpack", daemon=True)

    # the decode thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            size = self.source.unpack_to(self.target, cancel=self.cancel, watch=self)
            os.chmod(self.target, 0o444)
            self._on_done(size)
        except BaseException as err:
            error = err if isinstance(err, FlasherError) else _unexpected(err)
            with self._cond:
                self.error = error
                self._size_known = True
                self._cond.notify_all()
            if self._growth is not None:
                self._growth.fail(error)
            if self._finished:  # the cards are good; only the cache lost its copy
                self._on_event(Log("warning", f"the unpacked image was not kept: {error}"))
        finally:
            self._locks.close()

    def opened(self, fd: int) -> None:
        reader = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        with self._cond:
            self._fd = reader
            self._cond.notify_all()

    def decoded(self, end: int, written: list[Range]) -> None:
        self.cancel.check()
        if not self._size_known and end >= SIZE_PROBE_BYTES:
            self._resolve_size()
        for offset, length in written:
            if self._pending and sum(self._pending[-1]) == offset:
                last = self._pending[-1]
                self._pending[-1] = (last[0], last[1] + length)
            else:
                self._pending.append((offset, length))
        if end - self._published_at >= PUBLISH_BYTES:
            self._publish(end)
        with self._cond:
            self._frontier = end
            self._cond.notify_all()

    def _resolve_size(self) -> None:
        head = os.pread(self._fd, SIZE_PROBE_BYTES, 0)
        size = _size_from_table(head, self._isize) if self._isize is not None else None
        with self._cond:
            self._size, self._size_known = size, True
            if size is not None:
                self._growth = Growth(size)
            self._cond.notify_all()

    def _publish(self, end: int) -> None:
        """Hand the data runs decoded so far to the writer as extents aligned to 4 KiB (what
        direct I/O needs), up to the last whole block decoded; the rest waits."""
        growth = self._growth
        if growth is None:
            self._pending = []
            return
        size = growth.size_bytes
        limit = end if end >= size else end // ALIGN_BYTES * ALIGN_BYTES
        out: list[Range] = []
        keep: list[Range] = []
        for offset, length in self._pending:
            stop = offset + length
            start = max(offset // ALIGN_BYTES * ALIGN_BYTES, self._published_end)
            aligned_stop = min(-(-stop // ALIGN_BYTES) * ALIGN_BYTES, size, limit)
            if stop > limit:
                keep.append((max(offset, limit), stop - max(offset, limit)))
            if aligned_stop <= start:
                continue
            if out and sum(out[-1]) == start:
                out[-1] = (out[-1][0], aligned_stop - out[-1][0])
            else:
                out.append((start, aligned_stop - start))
            self._published_end = aligned_stop
        growth.add(out)
        self._pending = keep
        self._published_at = end

    def finished(self, size_bytes: int) -> None:
        if not self._size_known:
            self._resolve_size()
        if self._size is not None and size_bytes != self._size:
            raise ImageError(
                self.source.name,
                f"decoded {size_bytes} bytes where the file announced {self._size}",
            )
        self._publish(size_bytes)
        with self._cond:
            self._frontier = size_bytes
            self._finished = True
            complete = self._complete_fn
            self._cond.notify_all()
        if complete is not None:
            self._complete(complete)

    def _complete(self, complete: CompleteFn) -> None:
        growth = self.growth
        try:
            growth.complete(*complete(GrowingReader(self)))
        except FlasherError as err:
            growth.fail(err)

    # the caller's side ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wait_size(self) -> int | None:
        """The raw size, once known (None: it cannot be told before the end). Raises the
        decoding error, or Cancelled."""
        with self._cond:
            while not self._size_known:
                self.cancel.check()
                self._cond.wait(POLL_S)
            if self.error is not None:
                raise self.error
            return self._size

    @property
    def size_bytes(self) -> int:
        size = self.wait_size()
        if size is None:
            raise ValueError("the raw size is not known")
        return size

    @property
    def growth(self) -> Growth:
        """What the writer follows (once the size is known)."""
        self.wait_size()
        if self._growth is None:
            raise ValueError("the raw size is not known")
        return self._growth

    def raise_error(self) -> None:
        """After `close`: the decoding's error, if it failed."""
        if self.error is not None:
            raise self.error

    def raise_source_error(self) -> None:
        """After `close`: the error that made the image itself unusable (corrupt or truncated,
        found before its end), if any; not a cancel, not a cache that could not keep it."""
        if self.error is not None and not self._finished and not isinstance(self.error, Cancelled):
            raise self.error

    def reader(self) -> GrowingReader:
        return GrowingReader(self)

    @property
    def read_path(self) -> str:
        """A path that opens the file being decoded (in this process, while it runs)."""
        return f"/proc/self/fd/{self.wait_for(0)}"

    def wait_for(self, end: int) -> int:
        """Wait until the first `end` bytes are decoded; the file's read-only fd. Raises the
        decoding error, or Cancelled."""
        with self._cond:
            while self._fd < 0 or self._frontier < end:
                if self.error is not None:
                    raise self.error
                self.cancel.check()
                self._cond.wait(POLL_S)
            return self._fd

    def when_complete(self, complete: CompleteFn) -> None:
        """Call `complete` (on the decode thread, or now if decoding is over) with the complete
        image; what it returns (the allocation map) completes `growth`."""
        with self._cond:
            self._complete_fn = complete
            ready = self._finished
        if ready:
            self._complete(complete)

    def close(self, *, abandon: bool = False) -> None:
        """Wait for the decode to end (cancelling it first with `abandon`); release the file."""
        if abandon:
            self.cancel.cancel()
        if self._thread.ident is not None:
            self._thread.join()
        else:
            self._locks.close()
        with self._cond:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _gzip_isize(path: Path) -> int | None:
    """A gzip file's last four bytes: the raw size modulo 2**32 (of its last member)."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) < 18:
            return None
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def _size_from_table(head: bytes, isize: int) -> int | None:
    """The raw size: the smallest size congruent to `isize` modulo 2**32 that holds what the
    partition table (MBR partitions, or GPT's backup header) says the disk spans; None
    without a table or when that lies more than SIZE_SLACK_BYTES past the table's end. A wrong
    guess makes the decode fail at its end, never a card look good."""
    if len(head) < 1024 or head[510:512] != b"\x55\xaa":
        return None
    end = 0
    for slot in range(4):
        entry = head[446 + 16 * slot : 462 + 16 * slot]
        start, count = int.from_bytes(entry[8:12], "little"), int.from_bytes(entry[12:16], "little")
        if entry[4] == 0xEE:  # protective MBR: GPT's backup header is the disk's last sector
            for sector in (512, 4096):
                header = head[sector : sector + 92]
                if header[:8] == b"EFI PART":
                    end = max(end, (int.from_bytes(header[32:40], "little") + 1) * sector)
        elif entry[4] and count:
            end = max(end, (start + count) * 512)
    if end == 0:
        return None
    size = end + (isize - end) % (1 << 32)
    # An image ends at (or just past) its table's end; a far larger guess is a damaged trailer.
    return size if size - end <= SIZE_SLACK_BYTES else None


def _unexpected(err: BaseException) -> FlasherError:
    if isinstance(err, KeyboardInterrupt):
        return Cancelled()
    return ImageError("<unpack>", f"unpacking failed: {err}")


def start_unpack(
    cache: ImageCache,
    source: ImageSource,
    *,
    entry: CacheEntry | None = None,
    key: str | None = None,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> Path | BackgroundUnpack:
    """The raw image of a downloaded `entry` (or of the local file `source` with `key`) if it is
    unpacked already, else its unpacking, started. Needs the raw size (`source.
    uncompressed_size`); holds the cache's unpack lock until the decode ends."""
    if source.uncompressed_size is None and source.kind is not SourceKind.GZIP:
        raise ValueError("unpacking in the background needs the raw size")
    cancel = cancel or CancelToken()
    name = f"unpack:{entry.sha256}" if entry is not None else f"unpack:{key}"
    locks = ExitStack()
    try:
        locks.enter_context(cache.lock(name, cancel=cancel))
        if entry is not None:
            current = cache.get(entry.sha256)
            if current is not None and current.unpacked_path is not None:
                locks.close()
                return current.unpacked_path
            target = cache.root / f"{entry.sha256}.raw"
            target.unlink(missing_ok=True)  # a leftover the index does not vouch for
            sha = entry.sha256

            def done(size: int) -> None:
                cache.record_unpacked(sha, target, size)

        else:
            assert key is not None
            target = cache.local_unpacked_path(key)
            if target.exists():
                os.utime(target)
                locks.close()
                return target

            def done(size: int) -> None:
                pass

    except BaseException:
        locks.close()
        raise
    unpack = BackgroundUnpack(
        source,
        target,
        source.uncompressed_size,
        locks=locks,
        on_done=done,
        on_event=on_event,
        cancel=cancel,
    )
    unpack.start()
    return unpack
