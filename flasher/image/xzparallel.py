""".xz decoding on every core: the blocks of a multi-block file decode in parallel, in order.

`xz -T0` (and every balenaOS .xz) splits the data into independently compressed blocks and
records each block's sizes in the stream's index at the end of the file. `plan_xz` reads the
stream footers and indexes backwards from the end; `xz_chunks` then reads the blocks
sequentially and decodes them on a thread pool (liblzma releases the GIL), yielding the output
in file order. Each block is decoded by liblzma as a one-block .xz stream rebuilt around it
(the stream's own header, the block as stored, a one-record index with the block's recorded
sizes, a footer), so liblzma verifies everything it would in the whole file: the block header
CRC-32, the block's check (CRC-32, CRC-64 or SHA-256, as the stream flags say) and both sizes
against the index. The real index and the stream header and footer are checked here (CRC-32s,
flags, the same bytes the plan was made from). Blocks written with `--check=none` carry no
integrity check; they decode like the others (the card's read-back verify still compares the
written bytes with the decoded image).

Memory is bounded: a file whose blocks are larger than `MAX_BLOCK_BYTES` decoded is not decoded
in parallel, and at most `in_flight` blocks (their output included) are held at once. A file
with one block, an unknown check type, or anything the plan does not understand (a cut or
damaged trailer) takes the sequential decoder, which reports what is wrong. Concatenated
streams and stream padding are handled. Imports only the standard library, flasher.errors and
flasher.image.decoders.
"""

from __future__ import annotations

import lzma
import os
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from flasher.image import decoders as dec

MAX_BLOCK_BYTES = 64 * 1024 * 1024
IN_FLIGHT_BUDGET_BYTES = 128 * 1024 * 1024  # decoded output held at once, all blocks together
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


def _decode_block(header: bytes, block: XzBlock, data: bytes) -> list[bytes]:
    """One block as a one-block stream; raises LZMAError (check, sizes, data) or EOFError."""
    index = _index_for(block)
    trailer = index + _footer_for(index, header[6:8])
    decoder = lzma.LZMADecompressor(lzma.FORMAT_XZ)
    decoder.decompress(header)
    out: list[bytes] = []
    piece = decoder.decompress(data, dec.OUT_CHUNK_BYTES)
    while True:
        if piece:
            out.append(piece)
        if decoder.needs_input:
            break
        piece = decoder.decompress(b"", dec.OUT_CHUNK_BYTES)
    decoder.decompress(trailer)
    if not decoder.eof or decoder.unused_data:
        raise EOFError("the block does not end where the index says")
    return out


def _read_exact(src: dec.Input, size: int, name: str, what: str) -> bytes:
    parts: list[bytes] = []
    left = size
    while left > 0:
        data = src.read(min(left, 64 * 1024 * 1024))
        if not data:
            raise dec.truncated(name, f"the xz file ends inside {what}")
        parts.append(data)
        left -= len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _jobs(plan: XzPlan, src: dec.Input, name: str) -> Iterator[tuple[bytes, XzBlock, bytes, str]]:
    """(stream header, block, block bytes, what a decoding error means) in file order,
    checking the bytes between blocks against the plan as the reader passes them."""
    offset = 0
    for stream in plan.streams:
        if _read_exact(src, _HEADER_BYTES, name, "a stream header") != stream.header:
            raise dec.corrupt(name, f"xz stream header at byte {offset} changed while reading")
        offset += _HEADER_BYTES
        for number, block in enumerate(stream.blocks):
            data = _read_exact(src, block.stored_bytes, name, f"block {number}")
            check = _CHECK_NAMES[stream.check_id]
            fault = f"fails its {check} check or is damaged" if check else "is damaged"
            yield stream.header, block, data, f"block {number} at byte {offset} {fault}"
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
    """Decode the planned blocks on `workers` threads and yield their output in order; at
    most `workers + 1` blocks are held at once, fewer when their size exceeds the budget.
    Until the first chunk has been taken only the first block is decoded, so a reader that
    wants just the head (sniffing) costs one block."""
    in_flight = max(2, min(workers + 1, IN_FLIGHT_BUDGET_BYTES // max(1, plan.largest_block_bytes)))
    jobs = _jobs(plan, src, name)
    pending: deque[tuple[Future[list[bytes]], str]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xz-block")

    def top_up(limit: int) -> None:
        while len(pending) < limit:
            job = next(jobs, None)
            if job is None:
                return
            header, block, data, where = job
            pending.append((pool.submit(_decode_block, header, block, data), where))

    try:
        top_up(1)
        while pending:
            future, where = pending.popleft()
            try:
                chunks = future.result()
            except (lzma.LZMAError, EOFError) as err:
                raise dec.corrupt(name, f"xz {where}: {err}") from None
            while chunks:
                yield chunks.pop(0)
                top_up(in_flight - 1)  # the block being handed over counts too
            top_up(in_flight - 1)
    finally:
        for future, _where in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def xz_chunks(src: dec.Input, name: str, pread: dec.PreadFn, size_bytes: int) -> dec.Chunks:
    """The whole .xz file read through `src` (positioned at its start): in parallel when the
    plan allows, else sequentially."""
    workers = worker_count()
    plan = plan_xz(pread, size_bytes)
    if plan is not None and parallel_worth_it(plan, workers):
        return parallel_xz_chunks(src, name, plan, workers)
    return dec.xz_chunks(src, name)
