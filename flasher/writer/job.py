"""The values of a write job: the image as fed to the writer, and each target's result.

Imports only the standard library, flasher.errors and flasher.writer.growing (the pipeline, the
CLI and the GUI use these; the root helper does not need them).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from flasher.errors import FlasherError
from flasher.writer.growing import Growth

StreamOpener = Callable[[], BinaryIO]


@dataclass(frozen=True)
class ImageFeed:
    """The prepared image: a raw file (read-only) or a decompressed stream, plus the overlay.

    `overlay` holds (offset, bytes) ranges that replace the base bytes (the configured boot
    partition clusters). `sha256`, for streams, is the expected hash of the stream's bytes.
    With `growth`, `path` is a file a decoder is still filling: the writer follows it
    (flasher.writer.growing) and learns the allocation map when the decoding is complete.
    """

    size_bytes: int
    path: str | None = None
    open_stream: StreamOpener | None = None
    overlay: tuple[tuple[int, bytes], ...] = ()
    sha256: str | None = None
    growth: Growth | None = None  # with `path`: the file is still being decoded

    def __post_init__(self) -> None:
        if (self.path is None) == (self.open_stream is None):
            raise ValueError("an ImageFeed has either a path or a stream opener")

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, overlay: Sequence[tuple[int, bytes]] = ()
    ) -> ImageFeed:
        path = os.fspath(path)
        return cls(os.stat(path).st_size, path=path, overlay=tuple(overlay))

    @classmethod
    def from_stream(
        cls,
        open_stream: StreamOpener,
        size_bytes: int,
        *,
        overlay: Sequence[tuple[int, bytes]] = (),
        sha256: str | None = None,
    ) -> ImageFeed:
        return cls(size_bytes, open_stream=open_stream, overlay=tuple(overlay), sha256=sha256)

    @property
    def overlay_ranges(self) -> tuple[tuple[int, int], ...]:
        return tuple((off, len(data)) for off, data in sorted(self.overlay) if data)


@dataclass(frozen=True)
class TargetResult:
    """How one target ended; `error` is set exactly when `ok` is false."""

    target: str
    ok: bool
    bytes_written: int = 0
    seconds: float = 0.0
    verified: bool = False
    sha256: str | None = None
    error: FlasherError | None = None
    scanned_bytes: int = 0  # of the journal areas scrubbed instead of written
    zeroed_blocks: int = 0  # 4 KiB blocks there that held a stale journal block's magic


def overlay_memfd(feed: ImageFeed) -> int:
    """A sealed memfd holding the overlay bytes in range order (the helper's second fd)."""
    fd = os.memfd_create("flasher-overlay", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    for _off, data in sorted(feed.overlay):
        os.write(fd, data)
    # Sealed, so what the helper reads is exactly what was prepared.
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
    return fd


def stream_readinto(stream: BinaryIO) -> Callable[[memoryview], int]:
    """A `readinto(buffer) -> count` for any binary stream, copying only when it must."""
    method = getattr(stream, "readinto", None)
    if method is not None:
        return lambda buf: int(method(buf) or 0)

    def copy(buf: memoryview) -> int:
        data = stream.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    return copy
