"""Streaming decoders for image sources: decompressed chunks with bounded memory, ends verified.

Each `*_chunks` generator reads its input through `Input` (a bounded, counting reader), yields
chunks of at most `OUT_CHUNK_BYTES`, checks the format's end (gzip CRC and size, zip CRC-32 and
size, xz/bz2 stream end, zstd frame structure, checksum and content size) and raises ImageError
with problem "corrupt" or "truncated". Deflate goes through isal's igzip decoder (about 2x
stdlib zlib, and 1.5x isal's zlib-style object, which copies its unconsumed input each call).
The size helpers read only a format's headers or trailer. Imports only the standard library,
isal, zstandard and flasher.errors.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, BinaryIO, Protocol, cast

from flasher.error_codes import ProblemCode
from flasher.errors import ImageError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

IN_CHUNK_BYTES = 1024 * 1024
OUT_CHUNK_BYTES = 4 * 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b\x08"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_FRAME = 0xFD2FB528
_ZSTD_SKIPPABLE_MASK, _ZSTD_SKIPPABLE = 0xFFFFFFF0, 0x184D2A50
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand a byte of input into more than ~1032 bytes

PreadFn = Callable[[int, int], bytes]


@functools.cache
def inflate_errors() -> tuple[type[Exception], ...]:
    """What isal raises on bad deflate data. The decoders' libraries load when a format needs
    them (here, or in its `*_chunks`): a raw image's flash loads none of them."""
    from isal import igzip_lib, isal_zlib

    # isal's stubs declare its errors as instances; they are the classes raised
    return (cast(type[Exception], igzip_lib.IsalError), cast(type[Exception], isal_zlib.error))


@functools.cache
def _decode_errors() -> tuple[type[Exception], ...]:
    import lzma

    return (lzma.LZMAError, OSError, EOFError, *inflate_errors())


class Decompressor(Protocol):
    """What lzma, bz2 and isal's igzip decoders share."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


Chunks = Generator[bytes, None, None]


class ChunkReader(io.BufferedIOBase, BinaryIO):
    """A sequential binary reader over decoded chunks. `read(n)` returns n bytes unless the
    end comes first, handing a whole chunk over without a copy when it fits exactly. An error
    stays raised on every later read; `close` releases the input."""

    def __init__(self, chunks: Chunks, release: Callable[[], object]) -> None:
        super().__init__()
        self._chunks = chunks
        self._release = release
        self._chunk = b""
        self._offset = 0
        self._error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Make a chunk with unread bytes current; False at the end."""
        if self.closed:
            raise ValueError("read from a closed image stream")
        if self._error is not None:
            raise self._error
        while self._offset >= len(self._chunk):
            try:
                self._chunk, self._offset = next(self._chunks), 0
            except StopIteration:
                return False
            except BaseException as err:
                self._error = err
                raise
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = None if size is None or size < 0 else size
        parts: list[bytes] = []
        while (want is None or want > 0) and self._fill():
            available = len(self._chunk) - self._offset
            take = available if want is None else min(want, available)
            if self._offset == 0 and take == len(self._chunk):
                parts.append(self._chunk)
            else:
                parts.append(self._chunk[self._offset : self._offset + take])
            self._offset += take
            if want is not None:
                want -= take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read1(self, size: int = -1) -> bytes:
        if not self._fill():
            return b""
        end = len(self._chunk) if size < 0 else min(len(self._chunk), self._offset + size)
        return self.read(end - self._offset)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._fill():
            take = min(len(view) - done, len(self._chunk) - self._offset)
            view[done : done + take] = memoryview(self._chunk)[self._offset : self._offset + take]
            self._offset += take
            done += take
        return done

    def close(self) -> None:
        if not self.closed:
            self._chunks.close()
            self._release()
        super().close()

    def __enter__(self) -> ChunkReader:
        return self


class Input:
    """Sequential reads of `limit` bytes (or to the end) of an open file; counts what it read."""

    def __init__(self, file: BinaryIO, limit: int | None = None) -> None:
        self._file = file
        self._left = limit
        self.consumed_bytes = 0

    def read(self, size: int = IN_CHUNK_BYTES) -> bytes:
        if self._left is not None:
            size = min(size, self._left)
            if size <= 0:
                return b""
        data = self._file.read(size)
        self._count(len(data))
        return data

    def skip(self, size: int) -> None:
        """Move on by `size` bytes without reading them (they are read by position)."""
        self._file.seek(size, os.SEEK_CUR)
        self._count(size)

    def _count(self, size: int) -> None:
        self.consumed_bytes += size
        if self._left is not None:
            self._left -= size


def corrupt(name: str, detail: str) -> ImageError:
    return ImageError(
        name,
        f"the compressed data is corrupt ({detail})",
        problem=ProblemCode.CORRUPT,
        hint="Download the image again; if it keeps failing, the file on the server is damaged.",
    )


def truncated(name: str, detail: str) -> ImageError:
    return ImageError(
        name,
        f"the file ends early ({detail})",
        problem=ProblemCode.TRUNCATED,
        hint="The file is incomplete (an interrupted download or copy); get it again.",
    )


def raw_chunks(src: Input) -> Chunks:
    while chunk := src.read(OUT_CHUNK_BYTES):
        yield chunk


def _next_member(rest: bytes, src: Input, magic: bytes, name: str, fmt: str) -> bytes | None:
    """After the end of a stream: None at a clean end (zero padding is allowed), else the bytes
    that start the next concatenated stream; anything else is corrupt."""
    while not (rest := rest.lstrip(b"\0")):
        rest = src.read()
        if not rest:
            return None
    while len(rest) < len(magic) and (more := src.read()):
        rest += more
    if not rest.startswith(magic):
        raise corrupt(name, f"unexpected data after the end of the {fmt} stream")
    return rest


def _gzip_decoder() -> Decompressor:
    from isal import igzip_lib

    return cast(Decompressor, igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP))


def inflater() -> Decompressor:
    """A raw deflate decoder (zip members), through isal."""
    from isal import igzip_lib

    return cast(Decompressor, igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_DEFLATE))


def gzip_chunks(src: Input, name: str) -> Chunks:
    """gzip, including concatenated members; isal checks each member's CRC-32 and size."""
    return _streams(src, name, "gzip", _gzip_decoder, GZIP_MAGIC[:2])


def zip_member_chunks(src: Input, name: str, *, method: int, file_size: int, crc32: int) -> Chunks:
    """One zip member (stored or deflated), checked against the archive's size and CRC-32."""
    from isal import isal_zlib

    inner = raw_chunks(src) if method == 0 else _streams(src, name, "deflate", inflater, None)
    done, crc = 0, 0
    for chunk in inner:
        done += len(chunk)
        if done > file_size:
            raise corrupt(name, f"the member holds more than the {file_size} bytes recorded")
        crc = isal_zlib.crc32(chunk, crc)
        yield chunk
    if done < file_size:
        raise truncated(name, f"the member gave {done} of {file_size} bytes")
    if crc != crc32:
        raise corrupt(name, f"CRC-32 {crc:08x}, the archive records {crc32:08x}")


def _streams(
    src: Input, name: str, fmt: str, make: Callable[[], Decompressor], magic: bytes | None
) -> Chunks:
    """Decode concatenated streams that start with `magic`, or exactly one stream filling the
    input when `magic` is None; output is bounded by asking for at most OUT_CHUNK_BYTES."""
    decoder = make()
    while True:
        if decoder.eof:
            if magic is None:
                if decoder.unused_data or src.read(1):
                    raise corrupt(name, f"data after the end of the {fmt} stream")
                return
            following = _next_member(decoder.unused_data, src, magic, name, fmt)
            if following is None:
                return
            decoder, data = make(), following
        elif decoder.needs_input:
            data = src.read()
            if not data:
                raise truncated(name, f"the {fmt} stream stops before its end marker")
        else:
            data = b""  # the decoder holds output it had no room for
        try:
            out = decoder.decompress(data, OUT_CHUNK_BYTES)
        except _decode_errors() as err:
            raise corrupt(name, f"{fmt}: {err}") from None
        if out:
            yield out


def xz_chunks(src: Input, name: str) -> Chunks:
    """xz, including concatenated streams and stream padding; liblzma checks every block's
    check (CRC-32/CRC-64/SHA-256) and the index."""
    import lzma

    return _streams(src, name, "xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), XZ_MAGIC)


def bzip2_chunks(src: Input, name: str) -> Chunks:
    """bzip2, including concatenated streams (pbzip2); each block's CRC is checked."""
    import bz2

    return _streams(src, name, "bzip2", bz2.BZ2Decompressor, BZIP2_MAGIC)


def zstd_chunks(src: Input, name: str, layout: ZstdLayout) -> Chunks:
    """zstd frames; libzstd checks each frame's checksum when present. Its stream reader ends
    quietly on a cut file, so `layout` (the file's frame walk, `zstd_layout`, done once when
    it was sniffed) is checked at the end to prove completeness."""
    import zstandard  # loaded for .zst files only: a flash of anything else starts sooner

    reader = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], src),  # it only calls read()
        read_size=IN_CHUNK_BYTES,
        read_across_frames=True,
        closefd=False,
    )
    done = 0
    while True:
        try:
            out = reader.read(OUT_CHUNK_BYTES)
        except zstandard.ZstdError as err:
            raise corrupt(name, f"zstd: {err}") from None
        if not out:
            break
        done += len(out)
        yield out
    if layout.problem == "truncated":
        raise truncated(name, "the last zstd frame is incomplete")
    if layout.problem:
        raise corrupt(name, f"zstd: {layout.problem}")
    if layout.content_size is not None and layout.content_size != done:
        raise corrupt(name, f"zstd gave {done} bytes, its frames record {layout.content_size}")


@dataclass(frozen=True)
class ZstdLayout:
    problem: str | None  # None, "truncated", or what is wrong
    content_size: int | None  # sum of the frames' content sizes, if every frame records one
    checksummed: bool = False  # every frame carries a content checksum (xxhash64)


class _Window:
    """Cached positional reads, so walking many small headers costs few system calls."""

    def __init__(self, pread: PreadFn, span_bytes: int = 256 * 1024) -> None:
        self._pread = pread
        self._span = span_bytes
        self._start = 0
        self._data = b""

    def get(self, offset: int, length: int) -> bytes:
        rel = offset - self._start
        if rel < 0 or rel + length > len(self._data):
            self._start, self._data = offset, self._pread(max(length, self._span), offset)
            rel = 0
        return self._data[rel : rel + length]


def zstd_layout(pread: PreadFn, size_bytes: int) -> ZstdLayout:
    """Walk the frame and block headers (RFC 8878) from the start to the end of the file."""
    win = _Window(pread)
    pos, total = 0, 0
    known, checksummed, frames = True, True, 0
    while pos < size_bytes:
        head = win.get(pos, 18)  # the longest frame header
        if len(head) < 8:
            return ZstdLayout("truncated", None)
        magic = int.from_bytes(head[:4], "little")
        if magic & _ZSTD_SKIPPABLE_MASK == _ZSTD_SKIPPABLE:
            pos += 8 + int.from_bytes(head[4:8], "little")
            continue
        if magic != _ZSTD_FRAME:
            return ZstdLayout(f"no zstd frame at offset {pos}", None)
        fhd = head[4]
        single_segment = bool(fhd & 0x20)
        fcs_bytes = (1 if single_segment else 0, 2, 4, 8)[fhd >> 6]
        header = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3] + fcs_bytes
        if fhd & 0x08 or len(head) < header:
            return ZstdLayout(f"bad zstd frame header at offset {pos}", None)
        if fcs_bytes:
            fcs = int.from_bytes(head[header - fcs_bytes : header], "little")
            total += fcs + (256 if fcs_bytes == 2 else 0)
        else:
            known = False
        pos += header
        last = False
        while not last:
            block = win.get(pos, 3)
            if len(block) < 3:
                return ZstdLayout("truncated", None)
            value = int.from_bytes(block, "little")
            last, block_type, block_size = bool(value & 1), (value >> 1) & 3, value >> 3
            if block_type == 3:
                return ZstdLayout(f"reserved zstd block type at offset {pos}", None)
            pos += 3 + (1 if block_type == 1 else block_size)
        pos += 4 if fhd & 0x04 else 0  # content checksum
        checksummed = checksummed and bool(fhd & 0x04)
        frames += 1
    if pos > size_bytes:
        return ZstdLayout("truncated", None)
    return ZstdLayout(None, total if known else None, checksummed and frames > 0)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(9):
        if pos + i >= len(data):
            raise ValueError("short varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ValueError("varint too long")


def xz_uncompressed_size(pread: PreadFn, size_bytes: int) -> int | None:
    """Sum the indexes of every stream, walking back from the end; None if anything is off
    (the decoder then reports what is wrong)."""
    end, total = size_bytes, 0
    try:
        while end > 0:
            while end >= 4 and pread(4, end - 4) == b"\0\0\0\0":
                end -= 4  # stream padding
            footer = pread(12, end - 12) if end >= 24 else b""
            if len(footer) != 12 or footer[10:] != b"YZ":
                return None
            index_size = (int.from_bytes(footer[4:8], "little") + 1) * 4
            index_start = end - 12 - index_size
            if index_size > 16 * 1024 * 1024 or index_start < 12:
                return None
            index = pread(index_size, index_start)
            if index[:1] != b"\0":
                return None
            count, pos = read_varint(index, 1)
            blocks_bytes = 0
            for _ in range(count):
                unpadded, pos = read_varint(index, pos)
                uncompressed, pos = read_varint(index, pos)
                blocks_bytes += (unpadded + 3) // 4 * 4
                total += uncompressed
            start = index_start - blocks_bytes - 12
            if start < 0 or pread(6, start) != XZ_MAGIC:
                return None
            end = start
    except ValueError:
        return None
    return total


def gzip_uncompressed_size(pread: PreadFn, size_bytes: int) -> int | None:
    """The trailer's ISIZE is the size modulo 2**32: trusted only when exactly one value with
    that remainder fits what deflate can produce from this much input."""
    if size_bytes < 18:
        return None
    isize = int.from_bytes(pread(4, size_bytes - 4), "little")
    low = max(0, (size_bytes - 1024) * 65535 // 65540)  # stored blocks add 5 bytes per 64 KiB
    high = size_bytes * _DEFLATE_MAX_RATIO
    candidates: list[int] = []
    value = isize
    while value <= high and len(candidates) < 2:
        if value >= low:
            candidates.append(value)
        value += 1 << 32
    return candidates[0] if len(candidates) == 1 else None


def file_pread(fd: int) -> PreadFn:
    return lambda length, offset: os.pread(fd, length, offset)
