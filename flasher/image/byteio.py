"""Positional byte access shared by the image engine: files, partition slices, overlays.

`ReadAt` and `WriteAt` are what partition, FAT, ext4 and allocation-map code read through, so the
same code works on a raw image file, on one partition of it, and on a copy-on-write overlay.
`atomic_file` is how a whole image file is written: complete and synced, or not at all;
`write_data_runs` writes only a piece's non-zero blocks into it, so zeros stay holes;
`start_writeback` lets a long write reach the disk while it goes on. Imports only the standard
library.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

HOLE_BLOCK_BYTES = 4096
_ZERO_BLOCK = bytes(HOLE_BLOCK_BYTES)
_SPAN_BYTES = 64 * 1024
_ZERO_SPAN = bytes(_SPAN_BYTES)
_ZERO_PIECE = bytes(4 * 1024 * 1024)


@runtime_checkable
class ReadAt(Protocol):
    @property
    def size(self) -> int: ...

    def pread(self, length: int, offset: int) -> bytes:
        """Up to `length` bytes at `offset`; fewer only at the end."""
        ...


@runtime_checkable
class WriteAt(ReadAt, Protocol):
    def pwrite(self, data: bytes, offset: int) -> None: ...


class FileReader:
    """Read-only positional access to a file (the base image is never opened for writing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    @property
    def fd(self) -> int:
        return self._fd

    def pread(self, length: int, offset: int) -> bytes:
        chunks: list[bytes] = []
        while length > 0:
            chunk = os.pread(self._fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            length -= len(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class FileReadWriter(FileReader):
    """Read-write positional access, for editing an image in place (`os configure` without -o)."""

    def __init__(self, path: str | os.PathLike[str], *, private: bool = False) -> None:
        """With `private`, the file is made mode 0600 before anything is written to it (a
        configured image holds Wi-Fi and provisioning keys)."""
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:
            if private:
                os.fchmod(self._fd, 0o600)
            self._size = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            raise

    def pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n

    def __enter__(self) -> FileReadWriter:
        return self


class MemoryIO:
    """A fixed-size in-memory image, for building small images and for tests."""

    def __init__(self, size: int) -> None:
        self._buf = bytearray(size)

    @property
    def size(self) -> int:
        return len(self._buf)

    def pread(self, length: int, offset: int) -> bytes:
        return bytes(self._buf[offset : offset + length])

    def pwrite(self, data: bytes, offset: int) -> None:
        end = offset + len(data)
        if end > len(self._buf):
            raise ValueError(f"write of {len(data)} bytes at {offset} exceeds {len(self._buf)}")
        self._buf[offset:end] = data

    def getvalue(self) -> bytes:
        return bytes(self._buf)


class SliceIO:
    """A window [offset, offset+size) of another ReadAt/WriteAt, e.g. one partition."""

    def __init__(self, base: ReadAt, offset: int, size: int) -> None:
        if offset < 0 or size < 0:
            raise ValueError("negative slice")
        self._base = base
        self.offset = offset
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def pread(self, length: int, offset: int) -> bytes:
        if offset >= self._size:
            return b""
        length = min(length, self._size - offset)
        return self._base.pread(length, self.offset + offset)

    def pwrite(self, data: bytes, offset: int) -> None:
        if offset + len(data) > self._size:
            raise ValueError("write past the end of the slice")
        if not isinstance(self._base, WriteAt):
            raise TypeError("the underlying image is read-only")
        self._base.pwrite(data, self.offset + offset)


@contextmanager
def atomic_file(
    dest: Path, *, mode: int, wrap_error: Callable[[OSError], BaseException] | None = None
) -> Iterator[int]:
    """Yield the fd of a temporary file next to `dest`; when the block ends cleanly, give it
    `mode`, sync it and rename it over `dest`. On any failure the temporary file is removed, so
    `dest` is either untouched or complete. `wrap_error` turns an OSError from creating,
    chmodding or syncing the temporary file into the caller's error."""
    import tempfile  # here: most users of this module never write a file

    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as err:
        if wrap_error is None:
            raise
        raise wrap_error(err) from None
    try:
        yield fd
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
        except OSError as err:
            if wrap_error is None:
                raise
            raise wrap_error(err) from None
        os.close(fd)
        fd = -1
        os.replace(tmp_name, dest)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp_name).unlink(missing_ok=True)
        raise


_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writeback of dirty pages, do not wait for it


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (the os module lacks it), looked up once; None where missing."""
    import ctypes  # the first call only

    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], call)


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Start writing the dirty pages of [offset, offset + length) of `fd` to the disk without
    waiting for them; whether it started. A later fsync still waits for them and reports any
    error; this only spreads the work."""
    call = _sync_file_range()
    return call is not None and call(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0


def data_runs(chunk: bytes, offset: int) -> Iterator[tuple[int, int]]:
    """(start, end) in `chunk` of its runs of non-zero blocks; blocks are aligned to absolute
    offsets, and an aligned 64 KiB of zeros is skipped in one step (free space comes in runs)."""
    size = len(chunk)
    run_start = -1
    pos = 0
    while pos < size:
        at = offset + pos
        if (
            at % _SPAN_BYTES == 0
            and pos + _SPAN_BYTES <= size
            and chunk.startswith(_ZERO_SPAN, pos)
        ):
            end, zero = pos + _SPAN_BYTES, True
        else:
            end = min(size, pos + HOLE_BLOCK_BYTES - at % HOLE_BLOCK_BYTES)
            if end - pos == HOLE_BLOCK_BYTES:
                zero = chunk.startswith(_ZERO_BLOCK, pos)
            else:
                zero = chunk.count(0, pos, end) == end - pos
        if zero and run_start >= 0:
            yield run_start, pos
            run_start = -1
        elif not zero and run_start < 0:
            run_start = pos
        pos = end
    if run_start >= 0:
        yield run_start, size


def write_data_runs(fd: int, chunk: bytes, offset: int) -> list[tuple[int, int]]:
    """pwrite the non-zero blocks of `chunk` at `offset` of a new file, where the skipped zero
    blocks read back as zeros and stay holes; what was written, as (offset, length)."""
    if len(chunk) <= len(_ZERO_PIECE) and _ZERO_PIECE.startswith(chunk):
        return []
    view = memoryview(chunk)
    written: list[tuple[int, int]] = []
    for start, end in data_runs(chunk, offset):
        pwrite_all(fd, view[start:end], offset + start)
        written.append((offset + start, end - start))
    return written


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
