""".xz decoding on every core: the blocks of a multi-block file decode in parallel, in order.

`xz -T0` (and every balenaOS .xz) splits the data into independently compressed blocks and
records each block's sizes in the stream's index at the end of the file. `plan_xz` reads the
stream footers and indexes backwards from the end; `xz_chunks` then reads the blocks
sequentially and decodes them on a thread pool (liblzma releases the GIL), yielding the output
in file order; unpacking into a file (`flasher.image.xzunpack`) decodes the same blocks with
`block_pieces`, each straight to its offset. Each block is decoded by liblzma as a one-block
.xz stream rebuilt around it (the stream's own header, the block as stored, a one-record index
with the block's recorded sizes, a footer), so liblzma verifies everything it would in the
whole file: the block header CRC-32, the block's check (CRC-32, CRC-64 or SHA-256, as the
stream flags say) and both sizes against the index. The real index and the stream header and
footer are checked here (CRC-32s, flags, the same bytes the plan was made from). Blocks written
with `--check=none` carry no integrity check; they decode like the others (the card's read-back
verify still compares the written bytes with the decoded image).

Memory is bounded: a file whose blocks are larger than `MAX_BLOCK_BYTES` decoded is not decoded
in parallel; the block being read streams through a few pieces at a time, and the blocks
decoding ahead of it keep their output until the reader reaches them, no further block
starting while they hold `LOOKAHEAD_BUDGET_BYTES`. A block's bytes are handed over as they are
decoded, so a block that fails its check raises after its earlier pieces, as the sequential
decoder does. A file with one block, an unknown check type, or anything the plan does not
understand (a cut or damaged trailer) takes the sequential decoder, which reports what is
wrong. Concatenated streams and stream padding are handled. Imports only the standard library,
flasher.errors and flasher.image.decoders.
"""

from __future__ import annotations

import lzma
import os
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from flasher.image import decoders as dec

_Body = TypeVar("_Body")

MAX_BLOCK_BYTES = 64 * 1024 * 1024
# Decoded output the blocks ahead of the one being read may hold, all together, before no
# further block starts.
LOOKAHEAD_BUDGET_BYTES = 16 * 1024 * 1024
# Pieces (of OUT_CHUNK_BYTES) of the block being read that may wait for the reader.
READ_AHEAD_PIECES = 2
_IN_SLICE_BYTES = 1024 * 1024
MAX_WORKERS = 8
_HEADER_BYTES = 12
_FOOTER_BYTES = 12
_MAX_INDEX_BYTES = 16 * 1024 * 1024
_CHECK_BYTES = {0x00: 0, 0x01: 4, 0x04: 8, 0x0A: 32}  # none, CRC-32, CRC-64, SHA-256
_CHECK_NAMES = {0x00: "", 0x01: "CRC-32", 0x04: "CRC-64", 0x0A: "SHA-256"}


@dataclass(frozen=True)
class XzBlock:
    unpadded_bytes: int  # header + compressed data + check, as the index records it
    uncompressed_bytes: int

    @property
    def stored_bytes(self) -> int:
        return (self.unpadded_bytes + 3) // 4 * 4


@dataclass(frozen=True)
class XzStream:
    header: bytes  # the 12-byte stream header
    blocks: tuple[XzBlock, ...]
    trailer: bytes  # the index and the stream footer, exactly as stored
    padding_bytes: int  # zero bytes after the footer

    @property
    def check_id(self) -> int:
        return self.header[7]


@dataclass(frozen=True)
class XzPlan:
    streams: tuple[XzStream, ...]

    @property
    def blocks(self) -> int:
        return sum(len(s.blocks) for s in self.streams)

    @property
    def largest_block_bytes(self) -> int:
        return max((b.uncompressed_bytes for s in self.streams for b in s.blocks), default=0)


def _crc32_le(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(4, "little")


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _parse_index(index: bytes) -> tuple[XzBlock, ...] | None:
    """The records of an index (indicator, count, records, padding, CRC-32), or None if it is
    not well formed."""
    if index[:1] != b"\0" or _crc32_le(index[:-4]) != index[-4:]:
        return None
    count, pos = dec.read_varint(index, 1)
    blocks = []
    for _ in range(count):
        unpadded, pos = dec.read_varint(index, pos)
        uncompressed, pos = dec.read_varint(index, pos)
        if unpadded < 5:
            return None
        blocks.append(XzBlock(unpadded, uncompressed))
    if (pos + 3) // 4 * 4 != len(index) - 4 or any(index[pos:-4]):
        return None
    return tuple(blocks)


def plan_xz(pread: dec.PreadFn, size_bytes: int) -> XzPlan | None:
    """The streams and blocks of an .xz file, from its footers and indexes; None when anything
    is off or unsupported (the sequential decoder then says what)."""
    streams: list[XzStream] = []
    end = size_bytes
    try:
        while end > 0:
            stream_end = end
            while end >= 4 and pread(4, end - 4) == b"\0\0\0\0":
                end -= 4
            if end < _HEADER_BYTES + _FOOTER_BYTES:
                return None
            footer = pread(_FOOTER_BYTES, end - _FOOTER_BYTES)
            if len(footer) != _FOOTER_BYTES or footer[10:] != b"YZ":
                return None
            if _crc32_le(footer[4:10]) != footer[:4]:
                return None
            index_bytes = (int.from_bytes(footer[4:8], "little") + 1) * 4
            index_start = end - _FOOTER_BYTES - index_bytes
            if index_bytes > _MAX_INDEX_BYTES or index_start < _HEADER_BYTES:
                return None
            index = pread(index_bytes, index_start)
            blocks = _parse_index(index)
            if blocks is None:
                return None
            start = index_start - sum(b.stored_bytes for b in blocks) - _HEADER_BYTES
            if start < 0:
                return None
            header = pread(_HEADER_BYTES, start)
            if (
                header[:6] != dec.XZ_MAGIC
                or header[6:8] != footer[8:10]
                or header[6] != 0
                or header[7] not in _CHECK_BYTES
                or _crc32_le(header[6:8]) != header[8:12]
            ):
                return None
            trailer = index + footer
            streams.append(XzStream(header, blocks, trailer, stream_end - end))
            end = start
    except ValueError:
        return None
    return XzPlan(tuple(reversed(streams)))


def worker_count() -> int:
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


def parallel_worth_it(plan: XzPlan, workers: int) -> bool:
    return workers > 1 and plan.blocks > 1 and plan.largest_block_bytes <= MAX_BLOCK_BYTES


def _index_for(block: XzBlock) -> bytes:
    body = b"\0" + _varint_bytes(1) + _varint_bytes(block.unpadded_bytes)
    body += _varint_bytes(block.uncompressed_bytes)
    body += bytes(-len(body) % 4)
    return body + _crc32_le(body)


def _footer_for(index: bytes, flags: bytes) -> bytes:
    tail = (len(index) // 4 - 1).to_bytes(4, "little") + flags
    return _crc32_le(tail) + tail + b"YZ"


class _Cancelled(Exception):
    """The reader stopped; the block's decoding thread gives up."""


class _BlockOutput:
    """The decoded pieces of one block, handed from its decoding thread to the reader.

    A block decoded ahead of the reader keeps its pieces (at most the block); once the reader
    has reached it (`read`), it holds at most `limit` pieces at a time, so the block being read
    streams through instead of being held whole.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pieces: deque[bytes] = deque()
        self._limit: int | None = None
        self._finished = False
        self._error: BaseException | None = None
        self._cancelled = False
        self.held_bytes = 0

    @property
    def finished(self) -> bool:
        return self._finished

    def put(self, piece: bytes) -> None:
        with self._cond:
            while self._limit is not None and len(self._pieces) >= self._limit:
                if self._cancelled:
                    break
                self._cond.wait()
            if self._cancelled:
                raise _Cancelled
            self._pieces.append(piece)
            self.held_bytes += len(piece)
            self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """The block is done (with `error` if it failed); only the first call counts."""
        with self._cond:
            if self._finished:
                return
            self._finished = True
            self._error = error
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._pieces.clear()
            self._cond.notify_all()

    def read(self, limit: int) -> Iterator[bytes]:
        """The block's pieces in order, at most `limit` of them waiting from this call on;
        raises what its decoding raised, after the pieces decoded before the fault."""
        with self._cond:
            self._limit = limit
            self._cond.notify_all()
        return self._pieces_in_order()

    def _pieces_in_order(self) -> Iterator[bytes]:
        while True:
            with self._cond:
                while not self._pieces and not self._finished:
                    self._cond.wait()
                if not self._pieces:
                    if self._error is not None:
                        raise self._error
                    return
                piece = self._pieces.popleft()
                self.held_bytes -= len(piece)
                self._cond.notify_all()
            yield piece


def block_pieces(
    header: bytes, block: XzBlock, slices: Iterator[bytes], piece_bytes: int
) -> Iterator[bytes]:
    """One block (its stored bytes, as `slices` gives them) decoded as a one-block stream, in
    pieces of at most `piece_bytes`; raises LZMAError (check, sizes, data) or EOFError after
    the pieces decoded before the fault."""
    index = _index_for(block)
    trailer = index + _footer_for(index, header[6:8])
    decoder = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    decoder.decompress(header)
    # Input goes in slices, each let go once given: liblzma copies whatever input it has not
    # consumed when the output limit stops it, so a whole block given at once would be held
    # twice.
    while True:
        if decoder.needs_input:
            data = next(slices, None)
            if data is None:
                break
            piece = decoder.decompress(data, piece_bytes)
        else:
            piece = decoder.decompress(b"", piece_bytes)
        if piece:
            yield piece
    decoder.decompress(trailer)
    if not decoder.eof or decoder.unused_data:
        raise EOFError("the block does not end where the index says")


def _draining(data: list[bytes]) -> Iterator[bytes]:
    """The slices of `data` in order, each dropped from it once given."""
    data.reverse()
    while data:
        yield data.pop()


def file_slices(
    pread: dec.PreadFn, offset: int, size: int, name: str, what: str
) -> Iterator[bytes]:
    """`size` bytes of the file at `offset`, read by position in slices of at most
    `_IN_SLICE_BYTES`; ImageError (truncated) where the file ends before."""
    end = offset + size
    while offset < end:
        data = pread(min(end - offset, _IN_SLICE_BYTES), offset)
        if not data:
            raise dec.truncated(name, f"the xz file ends inside {what}")
        yield data
        offset += len(data)


def _decode_block(header: bytes, block: XzBlock, data: list[bytes], out: _BlockOutput) -> None:
    """One block's pieces put into `out`; LZMAError or EOFError end `out` with that error."""
    try:
        for piece in block_pieces(header, block, _draining(data), dec.OUT_CHUNK_BYTES):
            out.put(piece)
    except _Cancelled:
        return
    except (lzma.LZMAError, EOFError) as err:
        out.finish(err)
        return
    out.finish()


def _finish_on_failure(out: _BlockOutput) -> Callable[[Future[None]], None]:
    """A done-callback that hands any other failure of a block's thread to its reader, which
    would otherwise wait for that block forever."""

    def done(future: Future[None]) -> None:
        error = None if future.cancelled() else future.exception()
        if error is not None:
            out.finish(error)

    return done


def _read_exact(src: dec.Input, size: int, name: str, what: str) -> bytes:
    return b"".join(_read_slices(src, size, name, what))


def _read_slices(src: dec.Input, size: int, name: str, what: str) -> list[bytes]:
    """`size` bytes as slices of at most `_IN_SLICE_BYTES`, so a decoder can let go of what it
    has consumed."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        data = src.read(min(left, _IN_SLICE_BYTES))
        if not data:
            raise dec.truncated(name, f"the xz file ends inside {what}")
        parts.append(data)
        left -= len(data)
    return parts


def _blocks_in_order(
    plan: XzPlan, src: dec.Input, name: str
) -> Iterator[tuple[bytes, XzBlock, list[bytes], str]]:
    """(stream header, block, block bytes, what a decoding error means) in file order,
    checking the bytes between blocks against the plan as the reader passes them."""
    return _walk(plan, src, name, lambda _offset, size, what: _read_slices(src, size, name, what))


def block_places(
    plan: XzPlan, src: dec.Input, name: str
) -> Iterator[tuple[bytes, XzBlock, tuple[int, str], str]]:
    """(stream header, block, (its offset in the file, which block it is), what a decoding
    error means) in file order: `_blocks_in_order` that leaves each block's bytes to be read
    by position."""

    def skip(offset: int, size: int, what: str) -> tuple[int, str]:
        src.skip(size)
        return offset, what

    return _walk(plan, src, name, skip)


def _walk(
    plan: XzPlan, src: dec.Input, name: str, body: Callable[[int, int, str], _Body]
) -> Iterator[tuple[bytes, XzBlock, _Body, str]]:
    """The blocks in file order with what `body` (the block's offset in the file, its stored
    size, what it is) makes of each, the bytes between them read and checked against the
    plan."""
    offset = 0
    for stream in plan.streams:
        if _read_exact(src, _HEADER_BYTES, name, "a stream header") != stream.header:
            raise dec.corrupt(name, f"xz stream header at byte {offset} changed while reading")
        offset += _HEADER_BYTES
        for number, block in enumerate(stream.blocks):
            got = body(offset, block.stored_bytes, f"block {number}")
            check = _CHECK_NAMES[stream.check_id]
            fault = f"fails its {check} check or is damaged" if check else "is damaged"
            yield stream.header, block, got, f"block {number} at byte {offset} {fault}"
            offset += block.stored_bytes
        if _read_exact(src, len(stream.trailer), name, "the index") != stream.trailer:
            raise dec.corrupt(name, f"xz index at byte {offset} changed while reading")
        offset += len(stream.trailer)
        padding = _read_exact(src, stream.padding_bytes, name, "stream padding")
        if any(padding):
            raise dec.corrupt(name, "unexpected data after the end of the xz stream")
        offset += stream.padding_bytes
    if src.read(1):
        raise dec.corrupt(name, "data after the last xz stream")


def parallel_xz_chunks(src: dec.Input, name: str, plan: XzPlan, workers: int) -> dec.Chunks:
    """Decode the planned blocks on `workers` threads and yield their output in order.

    The block being read streams through (at most `READ_AHEAD_PIECES` of its pieces wait at
    once). Blocks after it start whenever a worker is free and the output they hold, all
    together, is under `LOOKAHEAD_BUDGET_BYTES`; each keeps its output until the reader reaches
    it. So every core decodes while the reader keeps up, and what is held stays under the
    budget plus one block per worker (blocks started together fill up after they started)
    plus the pieces of the block being read. A block's compressed bytes are read when it
    starts and let go as it is decoded. Until the first chunk has been taken only the first
    block is decoded, so a reader that wants just the head (sniffing) costs one block.
    """
    jobs = _blocks_in_order(plan, src, name)
    pending: deque[tuple[_BlockOutput, str]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xz-block")

    def start_next() -> bool:
        job = next(jobs, None)
        if job is None:
            return False
        header, block, data, where = job
        out = _BlockOutput()
        pool.submit(_decode_block, header, block, data, out).add_done_callback(
            _finish_on_failure(out)
        )
        pending.append((out, where))
        return True

    def top_up() -> None:
        while True:
            ahead = list(pending)[1:]
            decoding = sum(not out.finished for out, _where in pending)
            held = sum(out.held_bytes for out, _where in ahead)
            if decoding >= workers or held >= LOOKAHEAD_BUDGET_BYTES or not start_next():
                return

    try:
        start_next()
        while pending:
            out, where = pending[0]
            try:
                for piece in out.read(READ_AHEAD_PIECES):
                    yield piece
                    top_up()
            except (lzma.LZMAError, EOFError) as err:
                raise dec.corrupt(name, f"xz {where}: {err}") from None
            pending.popleft()
            top_up()
    finally:
        for out, _where in pending:
            out.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def xz_chunks(src: dec.Input, name: str, pread: dec.PreadFn, size_bytes: int) -> dec.Chunks:
    """The whole .xz file read through `src` (positioned at its start): in parallel when the
    plan allows, else sequentially."""
    parallel = parallel_plan(pread, size_bytes)
    if parallel is not None:
        return parallel_xz_chunks(src, name, *parallel)
    return dec.xz_chunks(src, name)


def parallel_plan(pread: dec.PreadFn, size_bytes: int) -> tuple[XzPlan, int] | None:
    """The file's plan and the threads to decode it on, when it decodes in parallel here."""
    workers = worker_count()
    plan = plan_xz(pread, size_bytes)
    if plan is not None and parallel_worth_it(plan, workers):
        return plan, workers
    return None
